"""Details of the highlighted row: paths, sizes, times, protection, and for files the header."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rich.cells import cell_len
from textual.content import Content

from ckpt_tui.history import LastDeletion
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.marks import Marks
from ckpt_tui.tui.model import Kind, MarkState, Node, TreeModel
from ckpt_tui.tui.widgets.hanging import HangingText, Line, auto_hang
from ckpt_tui.types import (
    FileDetails,
    FileInfo,
    FileStatus,
    MiStudioStep,
    RootInfo,
    StepInfo,
    TrainingInfo,
)

MAX_TENSORS = 24
MAX_FILES = 24
NAME_W = 28
KEY_W = 10  # "modified  ": a wrapped value continues under itself, not under its key
TENSOR_NAME_W = 20


def _when(mtime_ns: int, now: float) -> str:
    if not mtime_ns:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))
    return f"{stamp} ({fmt.age(mtime_ns, now)} ago)"


def _kv(key: str, value: str | Content, style: str = "") -> Content:
    return Content.assemble(
        (f"{key:<{KEY_W}}", "$text-muted"), (value, style) if isinstance(value, str) else value
    )


def _hang(line: Content) -> int:
    """A ``key      value`` line continues under its value; others under their indent."""
    text = line.plain
    if text[:1] != " " and len(text) > KEY_W and text[KEY_W - 1] == " ":
        return KEY_W
    return auto_hang(line)


class DetailsPanel(HangingText):
    """Shows one node; the app feeds it and may add file details loaded from the index.

    Renders its own content (no child widgets), so moving the cursor repaints this panel
    without re-running the screen layout; a value too long for the panel wraps under itself.
    """

    def __init__(
        self,
        model: TreeModel,
        units: fmt.Units,
        *,
        now: Callable[[], float] = time.time,
        show_path: Callable[[str], str] = str,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._model = model
        self._units = units
        self._now = now
        self._show_path = show_path
        self._last: LastDeletion | None = None

    def show(
        self,
        node: Node | None,
        marks: Marks,
        details: FileDetails | None = None,
        last: LastDeletion | None = None,
    ) -> None:
        """``last``: the newest deletion in a training (loaded after the first paint)."""
        self._last = last
        lines = self._lines(node, marks, details) if node is not None else []
        shown: list[Line] = [(line, _hang(line)) for line in lines]
        self.update(shown)

    def _fmt(self, n: int) -> str:
        return self._units.size(n)

    def _lines(self, node: Node, marks: Marks, details: FileDetails | None) -> list[Content]:
        now = self._now()
        info = node.info
        out: list[Content] = [Content.styled(node.name, "bold $accent")]
        path = getattr(info, "path", "")
        out.append(_kv("path", self._show_path(path)))
        out.append(_kv("size", f"{self._fmt(node.size)} apparent, {self._fmt(node.disk)} on disk"))
        out.append(_kv("modified", _when(node.mtime_ns, now)))
        state = marks.state(node)
        if state:
            n = len(marks.ids_of(node) & marks.marked)
            partial = state == MarkState.PARTIAL and node.kind == Kind.STEP
            out.append(
                _kv(
                    "marked",
                    fmt.count(n, "file") + (" (partial: the step stays)" if partial else ""),
                    "bold $warning",
                )
            )
        if isinstance(info, RootInfo):
            out.append(_kv("trainings", str(len(node.children or []))))
            out.append(_kv("files", f"{node.files:,}"))
        elif isinstance(info, TrainingInfo):
            out += self._training(node, info)
        elif isinstance(info, StepInfo):
            out += self._step(node, info)
        elif isinstance(info, FileInfo):
            out += self._file(info, details)
        return out

    def _training(self, node: Node, info: TrainingInfo) -> list[Content]:
        steps = node.children
        if steps:
            nums = [s.number for s in steps]
            lo, hi, n = min(nums), max(nums), len(nums)
        else:
            lo, hi, n = info.min_step or 0, info.max_step or 0, info.step_count
        out = [
            _kv("steps", f"{n:,} (step {lo:,} … {hi:,})"),
            _kv("files", f"{node.files:,}"),
        ]
        if info.layer_count:
            out.append(_kv("layers", f"up to {info.layer_count} per step"))
        last = self._last
        if last is not None:
            out.append(
                _kv(
                    "last deletion",
                    f"{fmt.count(last.steps, 'step')} deleted by {last.user}@{last.host}, "
                    f"{fmt.age(int(last.started_at * 1e9), self._now())} ago, "
                    f"freed {self._fmt(self._units.pick(last.freed_bytes, last.freed_disk_bytes))}",
                )
            )
        if info.mistudio is not None:  # --mistudio
            m = info.mistudio
            stale = f", {fmt.count(m.stale_rows, 'stale row')} (file gone)" if m.stale_rows else ""
            out.append(_kv("miStudio", m.status + stale, "bold $warning" if m.active else ""))
        if steps:
            infos = [s.info for s in steps if isinstance(s.info, StepInfo)]
            pinned = sum(1 for s in infos if s.pinned)
            guarded = sum(1 for s in infos if s.protection and not s.pinned)
            bad = sum(1 for s in infos if s.incomplete)
            if pinned:
                out.append(_kv("pinned", fmt.count(pinned, "step"), "$accent"))
            if guarded:
                out.append(_kv("protected", f"⊘ {fmt.count(guarded, 'step')}", "$accent"))
            if bad:
                out.append(_kv("incomplete", f"⚠ {fmt.count(bad, 'step')}", "$warning"))
        return out

    def _step(self, node: Node, info: StepInfo) -> list[Content]:
        out = [
            _kv("step", f"{info.step:,}" + (f" ({info.unit})" if info.unit != "step" else "")),
            _kv(
                "files",
                f"{node.files:,}"
                + (f" ({fmt.count(info.layer_count, 'layer')})" if info.layer_count else ""),
            ),
        ]
        if info.pinned:
            out.append(_kv("pinned", "⚑ never marked or deleted (p to unpin)", "$accent"))
        if info.mistudio is not None:  # --mistudio
            out.append(_kv("miStudio", _mistudio(info.mistudio)))
        for reason in info.protection:
            if reason != "pinned":
                out.append(_kv("protected", f"⊘ {reason}", "$accent"))
        if info.foreign_count:
            out.append(
                _kv(
                    "foreign",
                    f"{fmt.count(info.foreign_count, 'file')}, "
                    f"{self._fmt(info.foreign_bytes)}: kept, keep the folder",
                    "$text-muted",
                )
            )
        for p in info.problems:
            out.append(_kv("problem", f"⚠ {p}", "$warning"))
        for err in self._model.step_errors(node.id)[:3]:
            out.append(_kv("not deleted", f"✗ {err}", "bold $error"))
        if node.children:
            out.append(Content.styled("files", "bold"))
            for f in node.children[:MAX_FILES]:
                assert isinstance(f.info, FileInfo)
                err = f"  ✗ {f.info.error}" if f.info.error else ""
                size = self._fmt(self._units.pick(f.size, f.disk))
                out.append(
                    Content.assemble(
                        f"  {fmt.pad(fmt.ellipsize(f.name, NAME_W), NAME_W)} {size:>10}",
                        (err, "$error"),
                    )
                )
            if len(node.children) > MAX_FILES:
                out.append(Content(f"  … {len(node.children) - MAX_FILES} more"))
        return out

    def _file(self, info: FileInfo, details: FileDetails | None) -> list[Content]:
        if info.error:  # never "status ok" beside an error
            out = [
                _kv("status", "✗ not deleted", "bold $error"),
                _kv("error", info.error, "$error"),
                _kv("file", info.status.value, "$text-muted"),
            ]
        else:
            good = info.status in (FileStatus.OK, FileStatus.OTHER)
            out = [_kv("status", info.status.value, "$success" if good else "$warning")]
        if info.foreign:
            out.append(_kv("foreign", "not named by the layout: kept unless asked for"))
        if info.layer is not None:
            out.append(_kv("layer", f"{info.layer}" + (f" ({info.hook})" if info.hook else "")))
        if details is None:
            return out
        if details.header_error:
            out.append(_kv("header", details.header_error, "$warning"))
        if details.tensors:
            out.append(_kv("params", f"{details.parameter_count:,}"))
            out.append(Content.styled(f"tensors ({len(details.tensors)})", "bold"))
            out += _tensors(details.tensors[:MAX_TENSORS])
            if len(details.tensors) > MAX_TENSORS:
                out.append(Content(f"  … {len(details.tensors) - MAX_TENSORS} more"))
        if details.metadata:
            out.append(Content.styled("__metadata__", "bold"))
            for k, v in sorted(details.metadata.items()):
                out.append(Content.assemble((f"  {k}: ", "$text-muted"), v))
        return out


def _mistudio(m: MiStudioStep) -> str:
    if not m.rows:
        return "no miStudio record"
    parts = [fmt.count(m.rows, "row")]
    if m.is_best:
        parts.append("best")
    if m.loss is not None:
        parts.append(f"loss {m.loss:.4g}")
    if m.l0_sparsity is not None:
        parts.append(f"L0 {m.l0_sparsity:.4g}")
    return ", ".join(parts)


def _tensors(tensors: Sequence[object]) -> list[Content]:
    names = [str(getattr(t, "name", "")) for t in tensors]
    name_w = min(TENSOR_NAME_W, max((cell_len(n) for n in names), default=0))
    out = []
    for t, name in zip(tensors, names, strict=True):
        dtype = getattr(t, "dtype", "")
        shape = "×".join(str(d) for d in getattr(t, "shape", ()))
        out.append(
            Content.assemble(
                f"  {fmt.pad(name, name_w)} ", (f"{dtype:<5}", "$secondary"), f" [{shape}]"
            )
        )
    return out

"""Details of the highlighted row: paths, sizes, times, and for files the safetensors header."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from textual.content import Content
from textual.widget import Widget

from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.model import Kind, Marks, Node
from ckpt_tui.types import FileDetails, FileInfo, RootInfo, StepInfo, TrainingInfo

MAX_TENSORS = 24
MAX_FILES = 24


def _when(mtime_ns: int, now: float) -> str:
    if not mtime_ns:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))
    return f"{stamp} ({fmt.age(mtime_ns, now)} ago)"


def _kv(key: str, value: str | Content, style: str = "") -> Content:
    return Content.assemble(
        (f"{key:<10}", "$text-muted"), (value, style) if isinstance(value, str) else value
    )


class DetailsPanel(Widget):
    """Shows one node; the app feeds it and may add file details loaded from the index.

    Renders its own content (no child widgets), so moving the cursor repaints this panel
    without re-running the screen layout.
    """

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.time,
        show_path: Callable[[str], str] = str,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._now = now
        self._show_path = show_path
        self._content = Content("")

    def render(self) -> Content:
        return self._content

    def show(self, node: Node | None, marks: Marks, details: FileDetails | None = None) -> None:
        lines = self._lines(node, marks, details) if node is not None else []
        self._content = Content("\n").join(lines)
        self.refresh()

    def _lines(self, node: Node, marks: Marks, details: FileDetails | None) -> list[Content]:
        now = self._now()
        info = node.info
        title = Content.styled(node.name, "bold $accent")
        out: list[Content] = [title]
        path = getattr(info, "path", "")
        out.append(_kv("path", self._show_path(path)))
        out.append(_kv("size", f"{fmt.size(node.size)} apparent, {fmt.size(node.disk)} on disk"))
        out.append(_kv("modified", _when(node.mtime_ns, now)))
        state = marks.state(node)
        if state:
            n = len(marks.ids_of(node) & marks.marked)
            out.append(
                _kv(
                    "marked",
                    f"{fmt.count(n, 'file')}"
                    + (
                        " (partial: the step stays)"
                        if state == 1 and node.kind == Kind.STEP
                        else ""
                    ),
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
            nums = [s.info.step for s in steps if isinstance(s.info, StepInfo)]
            lo, hi, n = min(nums), max(nums), len(nums)
        else:
            lo, hi, n = info.min_step or 0, info.max_step or 0, info.step_count
        out = [
            _kv("steps", f"{n:,} (step {lo:,} … {hi:,})"),
            _kv("files", f"{node.files:,}"),
        ]
        if info.layer_count:
            out.append(_kv("layers", f"up to {info.layer_count} per step"))
        if steps:
            pinned = sum(1 for s in steps if isinstance(s.info, StepInfo) and s.info.pinned)
            bad = sum(1 for s in steps if isinstance(s.info, StepInfo) and s.info.incomplete)
            if pinned:
                out.append(_kv("pinned", f"{pinned} step(s)", "$accent"))
            if bad:
                out.append(_kv("incomplete", f"⚠ {bad} step(s)", "$warning"))
        return out

    def _step(self, node: Node, info: StepInfo) -> list[Content]:
        out = [
            _kv("step", f"{info.step:,}"),
            _kv("files", f"{node.files} ({info.layer_count} layers)"),
        ]
        if info.pinned:
            out.append(_kv("pinned", "yes: never marked or deleted (p to unpin)", "$accent"))
        for p in info.problems:
            out.append(_kv("problem", f"⚠ {p}", "$warning"))
        if node.children:
            out.append(Content.styled("layers", "bold"))
            for f in node.children[:MAX_FILES]:
                assert isinstance(f.info, FileInfo)
                err = f"  ✗ {f.info.error}" if f.info.error else ""
                out.append(
                    Content.assemble(f"  {f.name[:28]:<28} {fmt.size(f.size):>10}", (err, "$error"))
                )
            if len(node.children) > MAX_FILES:
                out.append(Content(f"  … {len(node.children) - MAX_FILES} more"))
        return out

    def _file(self, info: FileInfo, details: FileDetails | None) -> list[Content]:
        out = [_kv("status", info.status.value, "$success" if info.status == "ok" else "$warning")]
        if info.layer is not None:
            out.append(_kv("layer", f"{info.layer}" + (f" ({info.hook})" if info.hook else "")))
        if info.error:
            out.append(_kv("error", f"✗ {info.error}", "bold $error"))
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


def _tensors(tensors: Sequence[object]) -> list[Content]:
    out = []
    for t in tensors:
        name = getattr(t, "name", "")
        dtype = getattr(t, "dtype", "")
        shape = "×".join(str(d) for d in getattr(t, "shape", ()))
        out.append(Content.assemble(f"  {name:<20} ", (f"{dtype:<5}", "$secondary"), f" [{shape}]"))
    return out

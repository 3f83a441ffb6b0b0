"""The status area (root, totals, disk bar, marks, freed) and the progress panel.

Every line is fitted to the width when it is drawn, so it never wraps: the root path is cut
in the middle, optional facts drop out, and the marked total always stays on screen.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Label, ProgressBar

from ckpt_tui.tui import format as fmt
from ckpt_tui.types import DiskUsage

DISK_BAR_W = 24
ROOT_MIN_W = 16


@dataclass(frozen=True, slots=True)
class StatusFacts:
    """Everything the status area shows; the app builds one per refresh."""

    root: str
    indexed_bytes: int
    indexed_disk: int
    indexed_files: int
    trainings: int
    disk: DiskUsage | None
    marked_files: int
    marked_steps: int
    marked_bytes: int
    freed: int
    sort: str
    filter: str
    read_only: bool
    note: str = ""
    pending: str = ""  # "opening…", "scanning…": the totals are not known yet


def _fits(pieces: list[tuple[str, str]], width: int) -> bool:
    return sum(cell_len(t) for t, _ in pieces) <= width


def _content(pieces: list[tuple[str, str]]) -> Content:
    return Content.assemble(*pieces)


def _fit_note(note: str, room: int) -> str:
    """The note's leading ``·`` parts that fit whole (``indexed 3m ago · r rescans`` →
    ``indexed 3m ago``); cut with an ellipsis only when not even the first part fits."""
    parts = note.split(" · ")
    while len(parts) > 1 and cell_len(" · ".join(parts)) > room:
        parts.pop()
    text = " · ".join(parts)
    return text if cell_len(text) <= room else fmt.head(text, room - 1) + fmt.ELLIPSIS


class StatusBar(Widget):
    """Three lines at the top: where, how much, how full the disk is, what is marked.

    A fixed-height widget that only repaints itself: updating it never re-runs layout.
    """

    def __init__(self, units: fmt.Units, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.units = units
        self.facts: StatusFacts | None = None

    def show(self, facts: StatusFacts) -> None:
        self.facts = facts
        self.refresh()

    def render(self) -> Content:
        f = self.facts
        if f is None:
            return Content("")
        width = max(1, self.content_size.width)
        return Content("\n").join(
            [self._line1(f, width), self._line2(f, width), self._line3(f, width)]
        )

    def _line1(self, f: StatusFacts, width: int) -> Content:
        u = self.units
        a, d = u.size(f.indexed_bytes), u.size(f.indexed_disk)
        app_style = "bold" if u.apparent else ""
        disk_style = "" if u.apparent else "bold"
        head: list[tuple[str, str]] = [("ckpt-tui ", "bold $accent")]
        if f.read_only:
            head.append(("READ-ONLY ", "bold $warning"))
        variants: list[list[tuple[str, str]]] = [
            [
                (a, app_style),
                (" apparent · ", "$text-muted"),
                (d, disk_style),
                (" on disk · ", "$text-muted"),
                (
                    f"{fmt.count(f.indexed_files, 'file')} · {fmt.count(f.trainings, 'training')}",
                    "$text-muted",
                ),
            ],
            [
                (a, app_style),
                (" apparent · ", "$text-muted"),
                (d, disk_style),
                (" on disk · ", "$text-muted"),
                (fmt.count(f.trainings, "training"), "$text-muted"),
            ],
            [
                (a, app_style),
                (" apparent · ", "$text-muted"),
                (d, disk_style),
                (" on disk", "$text-muted"),
            ],
            [(a, app_style), (" / ", "$text-muted"), (d, disk_style), (" disk", "$text-muted")],
        ]
        if f.pending:
            variants = [[(f.pending, "$text-muted")]]
        used = sum(cell_len(t) for t, _ in head) + 3
        tail = variants[-1]
        for v in variants:
            if used + ROOT_MIN_W + sum(cell_len(t) for t, _ in v) <= width:
                tail = v
                break
        room = max(1, width - used - sum(cell_len(t) for t, _ in tail))
        root = fmt.middle(f.root, room)
        line = [*head, (root, "bold"), ("   ", ""), *tail]
        return _content(line).truncate(width)

    def _line2(self, f: StatusFacts, width: int) -> Content:
        if f.disk is None or f.disk.total <= 0:
            return Content.styled("disk usage unknown", "$text-muted")
        u = self.units
        used = 1 - f.disk.free / f.disk.total
        words = [
            (f"{u.size(f.disk.free)} free", "bold"),
            (f" of {u.size(f.disk.total)}", ""),
            (f" ({used:.0%} used)", "$text-muted"),
        ]
        room = width - 5 - 1 - sum(cell_len(t) for t, _ in words)
        bar_w = min(DISK_BAR_W, room)
        pieces: list[tuple[str, str]] = [("disk ", "$text-muted")]
        if bar_w >= 4:
            pieces += [(fmt.bar(used, bar_w), "$primary on $panel-lighten-1"), (" ", "")]
        return _content(pieces + words).truncate(width)

    def _line3(self, f: StatusFacts, width: int) -> Content:
        u = self.units
        size = u.size(f.marked_bytes)
        if f.marked_files:
            steps = fmt.count(f.marked_steps, "step")
            full = f"{steps} · {fmt.count(f.marked_files, 'file')} · {size}"
            short = f"{steps} · {size}"
            marked = full if cell_len(full) + 7 <= width else short
        else:
            marked = "nothing"
        pieces: list[tuple[str, str]] = [
            ("marked ", "$text-muted"),
            (marked, "bold $warning" if f.marked_files else ""),
        ]
        # each fact in its first form that fits; a filter first (it hides rows), with how to
        # clear it when there is room (the footer has none for that key at 80 columns)
        optional: list[list[list[tuple[str, str]]]] = [
            [[("   sort ", "$text-muted"), (f.sort, "")]],
        ]
        if f.freed:  # nothing freed yet says nothing: the room goes to the note and its key
            optional.insert(0, [[("   freed ", "$text-muted"), (u.size(f.freed), "bold $success")]])
        if not u.apparent:
            optional.insert(0, [[("   sizes ", "$text-muted"), ("disk usage", "bold")]])
        if f.filter:
            shown = [("   filter ", "$text-muted"), (f.filter, "bold")]
            optional.insert(0, [[*shown, (" (Esc clears)", "$text-muted")], shown])
        for forms in optional:
            extra = next((form for form in forms if _fits(pieces + form, width)), None)
            if extra is not None:
                pieces += extra
        if f.note:
            room = width - sum(cell_len(t) for t, _ in pieces) - 3
            if room >= 8:
                pieces.append(("   " + _fit_note(f.note, room), "$text-muted"))
        return _content(pieces).truncate(width)


class ProgressPanel(Horizontal):
    """Progress of a scan or a deletion: a label, a bar and the keys that apply."""

    def compose(self) -> ComposeResult:
        yield Label("", id="progress-label")
        yield ProgressBar(show_eta=False, id="progress-bar")
        yield Label("", id="progress-hint")

    def start(self, label: str, total: float | None, hint: str) -> None:
        self.query_one("#progress-label", Label).update(label)
        self.query_one("#progress-hint", Label).update(hint)
        self.query_one(ProgressBar).update(total=total, progress=0)
        self.display = True

    def set(self, label: str, progress: float, total: float | None = None) -> None:
        self.query_one("#progress-label", Label).update(label)
        bar = self.query_one(ProgressBar)
        if total is not None:
            bar.update(total=total, progress=progress)
        else:
            bar.update(progress=progress)

    def stop(self) -> None:
        self.display = False

"""The status area (root, totals, disk bar, marks, freed) and the progress panel."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Label, ProgressBar

from ckpt_tui.tui import format as fmt
from ckpt_tui.types import DiskUsage

DISK_BAR_W = 24


@dataclass(frozen=True, slots=True)
class StatusFacts:
    """Everything the status area shows; the app builds one per refresh."""

    root: str
    indexed_bytes: int
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


def disk_words(disk: DiskUsage) -> str:
    return f"{fmt.size(disk.free)} free of {fmt.size(disk.total)}"


class StatusBar(Widget):
    """Three lines at the top: where, how much, how full the disk is, what is marked.

    A fixed-height widget that only repaints itself: updating it never re-runs layout.
    """

    _content: Content = Content("")

    def render(self) -> Content:
        return self._content

    def show(self, f: StatusFacts) -> None:
        line1 = Content.assemble(
            ("ckpt-tui ", "bold $accent"),
            (f.root, "bold"),
            ("   indexed ", "$text-muted"),
            fmt.size(f.indexed_bytes),
            (
                f" in {fmt.count(f.indexed_files, 'file')} · {fmt.count(f.trainings, 'training')}",
                "$text-muted",
            ),
            ("   READ-ONLY: deletion is off" if f.read_only else "", "bold $warning"),
        )
        if f.disk is not None and f.disk.total > 0:
            used = 1 - f.disk.free / f.disk.total
            line2 = Content.assemble(
                ("disk ", "$text-muted"),
                (fmt.bar(used, DISK_BAR_W), "$primary on $panel"),
                " ",
                (disk_words(f.disk), "bold"),
                (f"  ({used:.0%} used)", "$text-muted"),
            )
        else:
            line2 = Content.styled("disk usage unknown", "$text-muted")
        marked = (
            f"{fmt.count(f.marked_steps, 'step')} · {fmt.count(f.marked_files, 'file')} "
            f"· {fmt.size(f.marked_bytes)}"
            if f.marked_files
            else "nothing"
        )
        line3 = Content.assemble(
            ("marked ", "$text-muted"),
            (marked, "bold $warning" if f.marked_files else ""),
            ("   freed this session ", "$text-muted"),
            (fmt.size(f.freed), "bold $success"),
            ("   sort ", "$text-muted"),
            f.sort,
            ("   filter ", "$text-muted") if f.filter else "",
            (f.filter, "bold") if f.filter else "",
            ("   " + f.note, "$text-muted") if f.note else "",
        )
        self._content = Content("\n").join([line1, line2, line3])
        self.refresh()


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

"""q while a deletion runs: stop after the current file and quit, or keep deleting."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Static

from ckpt_tui.tui.screens.dialog import Dialog
from ckpt_tui.tui.widgets.hanging import HangingText

PROGRESS_SECONDS = 0.25  # the question shows the run's progress, not the moment q was pressed


class QuitWhileDeletingScreen(Dialog[bool]):
    """True: stop after the current file, then quit. False: keep deleting.

    ``progress`` gives the run's progress line, or None once the run is over."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,y", "choose(True)", "Stop and quit", id="quit.yes"),
        Binding("n,escape", "choose(False)", "Keep deleting", id="quit.no"),
    ]

    def __init__(self, progress: Callable[[], str | None]) -> None:
        super().__init__()
        self.progress = progress

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box", classes="dialog"):
            yield Static(
                Content.styled("A deletion is running: quit?", "bold $warning"),
                classes="dialog-title",
            )
            with VerticalScroll(classes="dialog-body"):
                yield HangingText(self._progress_text(), id="quit-progress")
                yield HangingText(
                    "Stopping finishes the file being deleted and keeps the index in step with "
                    "the disk; the files not reached stay, as does their entry in the index."
                )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Keep deleting (n)", id="keep", variant="primary", compact=True)
                yield Button("Stop and quit (q)", id="stop", variant="warning", compact=True)

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()
        self.set_interval(PROGRESS_SECONDS, self._show_progress)

    def _progress_text(self) -> Content:
        line = self.progress()
        if line is None:
            return Content.styled("The deletion has finished: q quits, n stays.", "bold $success")
        return Content(line)

    def _show_progress(self) -> None:
        self.query_one("#quit-progress", HangingText).update(self._progress_text())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "stop")

    def action_choose(self, stop: bool) -> None:
        self.dismiss(stop)

"""q while a deletion runs: stop after the current file and quit, or keep deleting."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Static

from ckpt_tui.tui.screens.dialog import Dialog
from ckpt_tui.tui.widgets.hanging import HangingText


class QuitWhileDeletingScreen(Dialog[bool]):
    """True: stop after the current file, then quit. False: keep deleting."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,y", "choose(True)", "Stop and quit", id="quit.yes"),
        Binding("n,escape", "choose(False)", "Keep deleting", id="quit.no"),
    ]

    def __init__(self, progress: str) -> None:
        super().__init__()
        self.progress = progress

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box", classes="dialog"):
            yield Static(
                Content.styled("A deletion is running: quit?", "bold $warning"),
                classes="dialog-title",
            )
            with VerticalScroll(classes="dialog-body"):
                yield HangingText(
                    Content("\n").join(
                        [
                            Content(self.progress),
                            Content(
                                "Stopping finishes the file being deleted and keeps the index in "
                                "step with the disk; the files not reached stay, as does their "
                                "entry in the index."
                            ),
                        ]
                    )
                )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Keep deleting (n)", id="keep", variant="primary", compact=True)
                yield Button("Stop and quit (q)", id="stop", variant="warning", compact=True)

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "stop")

    def action_choose(self, stop: bool) -> None:
        self.dismiss(stop)

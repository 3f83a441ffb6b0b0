"""The second question for files another process holds open: delete them too, skip them, or
cancel. Owns its re-plan: y plans the approved files again with the open ones included."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Static

from ckpt_tui.errors import CkptError
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.screens.dialog import Dialog
from ckpt_tui.tui.widgets.hanging import HangingText
from ckpt_tui.types import Plan

if TYPE_CHECKING:
    from collections.abc import Callable

    from ckpt_tui.service import CheckpointService


class OpenFilesScreen(Dialog[Plan | None]):
    """Returns the plan to run: with the open files (y), without them (n), or None (Esc)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "delete_open", "Delete them too", id="open.yes"),
        Binding("n", "skip", "Skip them", id="open.skip"),
        Binding("escape", "cancel", "Cancel", id="open.cancel"),
    ]

    def __init__(self, service: CheckpointService, plan: Plan, rel: Callable[[str], str]) -> None:
        super().__init__()
        self.service = service
        self.plan = plan
        self.open = [p for p in plan.protected if p.needs_confirmation]
        self.rel = rel

    def compose(self) -> ComposeResult:
        n = fmt.count(len(self.open), "file")
        lines = [Content(f"The other {fmt.count(self.plan.file_count, 'file')} go either way.")]
        lines += [
            Content.assemble("  ", self.rel(p.path), "  ", (p.reason, "$warning"))
            for p in self.open
        ]
        with Vertical(id="open-box", classes="dialog"):
            yield Static(
                Content.styled(f"{n} open in another process: delete anyway?", "bold $error"),
                classes="dialog-title",
            )
            with VerticalScroll(classes="dialog-body"):
                yield HangingText(Content("\n").join(lines), id="open-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (Esc)", id="cancel", variant="primary", compact=True)
                yield Button("Skip them (n)", id="skip", compact=True)
                yield Button("Delete them too (y)", id="delete", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "delete":
            self.action_delete_open()
        elif event.button.id == "skip":
            self.action_skip()
        else:
            self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_skip(self) -> None:
        self.dismiss(self.plan)  # the open files stay; the rest goes as confirmed

    @work(group="open-plan", exclusive=True)
    async def action_delete_open(self) -> None:
        # Exactly the approved files plus the open ones: force (protections were already
        # decided in the first dialog) and foreign (only ticked ones are in the plan).
        ids = [f.file_id for f in self.plan.files] + [p.file_id for p in self.open if p.file_id]
        try:
            plan = await self.service.plan_files(
                self.plan.root_id, ids, force=True, include_open=True, include_foreign=True
            )
        except CkptError as err:
            self.notify(str(err), title="Cannot plan the deletion", severity="error")
            return
        self.dismiss(plan)

"""Confirm a deletion: counts, bytes, free space before → after, the first paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from ckpt_tui.tui import format as fmt

FIRST_PATHS = 6


@dataclass(frozen=True, slots=True)
class ConfirmFacts:
    """What the dialog says; built by the app from a Plan."""

    title: str
    steps: int
    partial_steps: int
    files: int
    bytes: int
    free_before: int | None
    paths: tuple[str, ...]
    protected: tuple[str, ...] = ()
    action: str = "Delete"
    pending: bool = False  # figures from the marks while the plan is being checked


class ConfirmScreen(ModalScreen[bool]):
    """y confirms; n or Escape cancels; focus starts on Cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "choose(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "choose(False)", "No", id="confirm.no"),
        Binding("left,right", "switch", "Switch", show=False, id="confirm.switch"),
    ]

    def __init__(self, facts: ConfirmFacts) -> None:
        super().__init__()
        self.facts = facts

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="dialog"):
            yield Static(self._text(self.facts), id="confirm-text")
            with Horizontal(id="confirm-buttons"):
                yield Button("Cancel  (n)", id="cancel", variant="primary")
                yield Button(
                    f"{self.facts.action}  (y)",
                    id="confirm",
                    variant="error",
                    disabled=self.facts.pending,
                )

    def show(self, facts: ConfirmFacts) -> None:
        """Replace the figures (the plan has been checked): y now confirms."""
        self.facts = facts
        self.query_one("#confirm-text", Static).update(self._text(facts))
        self.query_one("#confirm", Button).disabled = facts.pending

    @staticmethod
    def _text(f: ConfirmFacts) -> Content:
        what = fmt.count(f.steps, "step") + f" ({fmt.count(f.files, 'file')})"
        lines = [
            Content.styled(f.title, "bold $error"),
            Content(""),
            Content.assemble(
                ("   ", ""), (what, "bold"), " · frees ", (fmt.size(f.bytes), "bold $success")
            ),
        ]
        if f.partial_steps:
            lines.append(
                Content.styled(
                    f"   {fmt.count(f.partial_steps, 'step')} will be left partial "
                    "(only some files marked)",
                    "$warning",
                )
            )
        if f.free_before is not None:
            lines.append(
                Content.assemble(
                    "   free space ",
                    (fmt.size(f.free_before), "bold"),
                    " → ",
                    (fmt.size(f.free_before + f.bytes), "bold $success"),
                )
            )
        lines.append(Content(""))
        if f.pending:
            lines.append(
                Content.styled(
                    "   Checking each file against the index and live-writer protection…",
                    "$text-muted",
                )
            )
        lines += [Content(f"   {p}") for p in f.paths[:FIRST_PATHS]]
        more = len(f.paths) - FIRST_PATHS
        if more > 0:
            lines.append(Content.styled(f"   … and {more:,} more", "$text-muted"))
        if f.protected:
            lines += [
                Content(""),
                Content.styled(f"   Not deleted ({len(f.protected)}):", "bold $warning"),
            ]
            lines += [Content.styled(f"   {p}", "$warning") for p in f.protected[:4]]
            if len(f.protected) > 4:
                lines.append(Content.styled(f"   … and {len(f.protected) - 4} more", "$text-muted"))
        return Content("\n").join(lines)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_choose(self, yes: bool) -> None:
        if yes and self.facts.pending:
            self.notify("Still checking the plan; y works in a moment", timeout=2)
            return
        self.dismiss(yes)

    def action_switch(self) -> None:
        self.focus_next()

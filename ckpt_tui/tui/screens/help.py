"""The help screen: the key table and what the glyphs mean."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from ckpt_tui.tui.keys import KEYS

GLYPHS = (
    ("●  ◐  ○", "marked · partly marked · not marked"),
    ("⚑", "pinned step"),
    ("⚠", "incomplete step (missing layers, invalid safetensors, stray temp file)"),
    ("✗", "a file that could not be deleted, with the reason"),
)


class HelpScreen(ModalScreen[None]):
    """Keys and glyphs; any of Escape, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help.close"),
    ]

    def compose(self) -> ComposeResult:
        rows = [Content.styled("ckpt-tui — keys", "bold $accent"), Content("")]
        rows += [Content.assemble((f"{k:<20}", "bold $secondary"), v) for k, v in KEYS]
        rows += [Content(""), Content.styled("glyphs", "bold $accent")]
        rows += [Content.assemble((f"{g:<20}", "bold"), v) for g, v in GLYPHS]
        rows += [
            Content(""),
            Content.styled(
                "Protected from deletion: pinned steps, the newest step of each training, files "
                "modified in the last 2 minutes, files open in another process (asks twice).",
                "$text-muted",
            ),
        ]
        rows += [Content.styled("Esc / q / ? to close", "$text-muted")]
        with Vertical(id="help-box", classes="dialog"):
            yield Static(Content("\n").join(rows), id="help-text")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)

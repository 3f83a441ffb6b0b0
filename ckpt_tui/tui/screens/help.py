"""The help screen: the key table, what the glyphs mean, what is protected. It scrolls."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Static

from ckpt_tui.tui.keys import KEYS
from ckpt_tui.tui.screens.dialog import Dialog
from ckpt_tui.tui.widgets.hanging import HangingText, Line

KEY_W = 20
GLYPHS = (
    ("●  ◐  ○", "marked · partly marked · not marked"),
    ("⚑", "pinned step: never marked or deleted (p unpins)"),
    ("⊘", "protected step: marking its training skips it; the confirm dialog offers it"),
    ("⚠", "incomplete step (missing layers, invalid safetensors, stray temp file)"),
    ("✗", "a file that could not be deleted, with the reason (it stays marked)"),
)
PROTECTIONS = (  # an item's wrapped lines continue under its text, not under its bullet
    "Protected steps (⊘), with the reason in the details panel and the confirm dialog:",
    "  · the newest valid step of each training, and any newer one (it may be in progress)",
    "  · steps modified in the last 2 minutes (--recent): they may still be being written",
    "  · pinned steps (⚑)",
    "Files open in another process are asked about a second time.",
    "Files a step's layout does not name (foreign) are kept unless ticked in the dialog.",
    "",
    "Sizes are binary (KiB, MiB, GiB) like du, ncdu and df; --si shows decimal units.",
    "a switches every figure between apparent size and disk usage.",
)


class HelpScreen(Dialog[None]):
    """Keys and glyphs; Escape, q or ? closes it; arrows, PgUp/PgDn, Home/End scroll."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="help.close"),
    ]

    def compose(self) -> ComposeResult:
        # wrapped by HangingText at the box's width: a description continues under itself
        rows: list[Line] = [_row(k, v, "bold $secondary") for k, v in KEYS]
        rows += [(Content(""), 0), (Content.styled("glyphs", "bold $accent"), 0)]
        rows += [_row(g, v, "bold") for g, v in GLYPHS]
        rows += [(Content(""), 0)]
        rows += [(Content.styled(line, "$text-muted"), _hang(line)) for line in PROTECTIONS]
        with Vertical(id="help-box", classes="dialog"):
            yield Static(
                Content.assemble(
                    ("ckpt-tui — keys", "bold $accent"),
                    ("   ↑↓ PgUp PgDn Home End scroll · Esc closes", "$text-muted"),
                ),
                id="help-title",
                classes="dialog-title",
            )
            with VerticalScroll(classes="dialog-body", id="help-body"):
                yield HangingText(rows, id="help-text")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)


def _hang(line: str) -> int:
    """``  · item`` continues under ``item``; a paragraph under its first letter."""
    return len(line) - len(line.lstrip(" ·"))


def _row(key: str, words: str, style: str) -> Line:
    """One key and what it does; the description wraps under itself."""
    return Content.assemble((f"{key:<{KEY_W}}", style), words), KEY_W

"""The help screen: the key table, what the glyphs mean, what is protected. It scrolls."""

from __future__ import annotations

import textwrap
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Static

from ckpt_tui.tui.keys import KEYS
from ckpt_tui.tui.screens.dialog import Dialog

KEY_W = 20
TEXT_W = 72  # wrapped here, so the text never re-wraps in the box (80 columns fit 75)
GLYPHS = (
    ("●  ◐  ○", "marked · partly marked · not marked"),
    ("⚑", "pinned step: never marked or deleted (p unpins)"),
    ("⊘", "protected step: marking its training skips it; the confirm dialog can include it"),
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
        rows = [row for k, v in KEYS for row in _rows(k, v, "bold $secondary")]
        rows += [Content(""), Content.styled("glyphs", "bold $accent")]
        rows += [row for g, v in GLYPHS for row in _rows(g, v, "bold")]
        rows += [Content("")] + [
            Content.styled(part, "$text-muted")
            for line in PROTECTIONS
            for part in (textwrap.wrap(line, TEXT_W, subsequent_indent=_hang(line)) or [""])
        ]
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
                yield Static(Content("\n").join(rows), id="help-text")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def action_close(self) -> None:
        self.dismiss(None)


def _hang(line: str) -> str:
    """``  · item`` continues under ``item``; a paragraph under its first letter."""
    bullet = len(line) - len(line.lstrip(" ·"))
    return " " * bullet


def _rows(key: str, words: str, style: str) -> list[Content]:
    """One key and what it does, the description wrapped under itself."""
    parts = textwrap.wrap(words, TEXT_W - KEY_W) or [""]
    out = [Content.assemble((f"{key:<{KEY_W}}", style), parts[0])]
    out += [Content(" " * KEY_W + part) for part in parts[1:]]
    return out

"""What every dialog shares: a box that fits the screen, a body that scrolls inside it, and a
row of buttons docked at the bottom so they (and their key hints) always stay whole."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button

T = TypeVar("T")


class Dialog(ModalScreen[T]):
    """Arrows, PgUp/PgDn, Home/End scroll the body whatever has focus; Left/Right move
    between the buttons."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "scroll('up')", "Scroll up", show=False, id="dialog.up"),
        Binding("down", "scroll('down')", "Scroll down", show=False, id="dialog.down"),
        Binding("pageup", "scroll('page_up')", "Page up", show=False, id="dialog.pageup"),
        Binding("pagedown", "scroll('page_down')", "Page down", show=False, id="dialog.pagedown"),
        Binding("home", "scroll('home')", "Top", show=False, id="dialog.home"),
        Binding("end", "scroll('end')", "Bottom", show=False, id="dialog.end"),
        Binding("left", "focus_button(-1)", "Previous", show=False, id="dialog.left"),
        Binding("right", "focus_button(1)", "Next", show=False, id="dialog.right"),
    ]

    def action_scroll(self, how: str) -> None:
        body = self.query(".dialog-body").first(VerticalScroll)
        {
            "up": body.scroll_up,
            "down": body.scroll_down,
            "page_up": body.scroll_page_up,
            "page_down": body.scroll_page_down,
            "home": body.scroll_home,
            "end": body.scroll_end,
        }[how](animate=False)

    def action_focus_button(self, delta: int) -> None:
        buttons = [b for b in self.query(Button) if not b.disabled]
        if not buttons:
            return
        focused = self.focused
        i = buttons.index(focused) if isinstance(focused, Button) and focused in buttons else -1
        buttons[(i + delta) % len(buttons)].focus()

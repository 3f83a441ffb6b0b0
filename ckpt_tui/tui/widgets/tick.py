"""A checkbox whose state reads without colour: ``[✓]`` ticked, ``[ ]`` not.

Textual's ``Checkbox`` draws ``▐X▌`` either way and tells the states apart only by colour,
which some themes and terminals flatten.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox


class Tick(Checkbox):
    """A ``Checkbox`` with an explicit tick; Space or Enter toggles it (never more)."""

    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--button")
        return Content.assemble("[", ("✓" if self.value else " ", style), "]")

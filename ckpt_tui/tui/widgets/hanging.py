"""Text whose wrapped lines keep their indentation (a hanging indent).

Textual wraps a long line back to column 0, so a protected step's reason or a details value
that does not fit reads as a new entry. ``wrap_hanging`` breaks a line at spaces or after
``/``, ``,`` and ``;`` (paths break between their components) and indents every continuation
line; ``HangingText`` renders lines that way at whatever width it gets.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from textual.content import Content
from textual.geometry import Size
from textual.visual import VisualType
from textual.widgets import Static

HANG_EXTRA = 2  # continuation lines sit this much deeper than the line's own indent
BREAK_AFTER = "/,;"

Line = tuple[Content, int]  # a line and the indent of its continuation lines


def auto_hang(line: Content) -> int:
    """An indented line continues two cells deeper than it starts; a flush one at 0."""
    text = line.plain
    lead = len(text) - len(text.lstrip(" "))
    return lead + HANG_EXTRA if lead else 0


def _break_at(text: str, cells: int, start: int) -> int:
    """Where to cut ``text`` so the first part fits in ``cells``: after the last space or
    break character that fits (not inside the first ``start`` chars), else at the limit."""
    used, limit = 0, 0
    for i, ch in enumerate(text):
        used += cell_len(ch)
        if used > cells:
            break
        limit = i + 1
    if limit >= len(text):
        return len(text)
    if text[limit] == " ":
        return limit
    for i in range(limit - 1, start, -1):
        if text[i] == " ":
            return i
        if text[i] in BREAK_AFTER:
            return i + 1
    return max(limit, 1)


def wrap_hanging(line: Content, width: int, hang: int) -> list[Content]:
    """``line`` cut to ``width`` cells per line, continuation lines indented by ``hang``."""
    if width <= 0 or line.cell_length <= width:
        return [line]
    hang = min(hang, width // 2)
    pad = Content(" " * hang)
    text = line.plain
    start = len(text) - len(text.lstrip(" "))  # never break inside the leading indent
    out: list[Content] = []
    rest, first = line, True
    while True:
        room = width if first else width - hang
        plain = rest.plain
        if cell_len(plain) <= room:
            out.append(rest if first else pad + rest)
            return out
        cut = _break_at(plain, room, start if first else 0)
        piece = rest[:cut].rstrip()
        out.append(piece if first else pad + piece)
        tail = plain[cut:]
        rest = rest[cut + len(tail) - len(tail.lstrip(" ")) :]
        first = False
        if not rest.plain:
            return out


class HangingText(Static):
    """A Static whose lines wrap with a hanging indent at the widget's width (so whoever
    reads a Static — a test, a query — reads this too)."""

    DEFAULT_CSS = """
    HangingText {
        height: auto;
    }
    """

    def __init__(
        self,
        content: Content | str | Sequence[Line] = "",
        *,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._text_lines: list[Line] = []
        self._cache: tuple[int, list[Content]] | None = None
        self.update(content)

    def update(self, content: VisualType | Sequence[Line] = "", *, layout: bool = True) -> None:
        """New text: a str or Content (each line's hang from its indent) or explicit lines."""
        if isinstance(content, (str, Content)):
            text = Content(content) if isinstance(content, str) else content
            lines = text.split("\n", allow_blank=True)
            self._text_lines = [(line, auto_hang(line)) for line in lines]
        elif isinstance(content, (list, tuple)):
            self._text_lines = list(content)
        else:
            raise TypeError(f"HangingText shows text, not {type(content).__name__}")
        self._cache = None
        height = self.styles.height
        # only a widget sized by its text needs a new layout (the details panel has a fixed
        # height: a cursor move repaints it alone)
        self.refresh(layout=layout and (height is None or height.is_auto))

    @property
    def plain(self) -> str:
        """The unwrapped text (for tests and for reading what the widget says)."""
        return "\n".join(line.plain for line, _ in self._text_lines)

    def wrapped(self, width: int) -> list[Content]:
        if self._cache is None or self._cache[0] != width:
            out = [
                part for line, hang in self._text_lines for part in wrap_hanging(line, width, hang)
            ]
            self._cache = (width, out)
        return self._cache[1]

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return max((line.cell_length for line, _ in self._text_lines), default=0)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.wrapped(width))

    def render(self) -> Content:
        return Content("\n").join(self.wrapped(self.content_size.width))

"""Small pure formatters shared by the widgets: sizes (one unit setting), ages, bars, and
cell-aware truncation (``rich.cells.cell_len``, never ``len``: CJK names take two cells)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import humanize
from rich.cells import cell_len

BAR_CHARS = " ▏▎▍▌▋▊▉█"
AGE_UNITS = ((365 * 86400, "y"), (30 * 86400, "mo"), (86400, "d"), (3600, "h"), (60, "m"))
ELLIPSIS = "…"
_TAIL_TOKEN = re.compile(r"[^_\-/ .]+$")  # the part after the last separator: 498000, 36766f85


@dataclass(slots=True)
class Units:
    """How sizes are shown, shared by every widget of one app.

    ``si``: decimal units (kB, MB, GB) instead of binary (KiB, MiB, GiB, as du, ncdu and df).
    ``apparent``: apparent sizes (st_size) instead of disk usage (st_blocks × 512); ``a``
    toggles it.
    """

    si: bool = False
    apparent: bool = True

    def size(self, n: int) -> str:
        """``257.0 MiB`` (binary) or ``269.5 MB`` (decimal)."""
        return str(humanize.naturalsize(n, binary=not self.si, format="%.1f"))

    def pick(self, apparent: int, disk: int) -> int:
        """The figure the current mode shows."""
        return apparent if self.apparent else disk

    @property
    def mode(self) -> str:
        return "apparent" if self.apparent else "disk usage"


DEFAULT_UNITS = Units()


def size(n: int) -> str:
    """Binary size with the default units, for places that have no app at hand."""
    return DEFAULT_UNITS.size(n)


def age(mtime_ns: int | None, now: float) -> str:
    """Compact age like ``3h`` or ``12d``; ``-`` when unknown."""
    if not mtime_ns:
        return "-"
    seconds = max(0.0, now - mtime_ns / 1e9)
    for unit, suffix in AGE_UNITS:
        if seconds >= unit:
            return f"{int(seconds // unit)}{suffix}"
    return f"{int(seconds)}s"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar with eighth-cell resolution, padded to ``width`` cells."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    text = "█" * full + (BAR_CHARS[rest] if rest and full < width else "")
    return text.ljust(width)


def count(n: int, word: str) -> str:
    """``3 files`` / ``1 file`` with thousands separators; ``2 step directories``."""
    plural = f"{word[:-1]}ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else f"{word}s"
    return f"{n:,} {word if n == 1 else plural}"


def rate(units: Units, bytes_done: int, seconds: float) -> str:
    """Throughput like ``1.2 GiB/s``; ``-`` until there is enough time to measure."""
    if seconds < 0.2 or bytes_done <= 0:
        return "-"
    return f"{units.size(int(bytes_done / seconds))}/s"


# cell-aware text fitting ---------------------------------------------------------------------


def head(text: str, cells: int) -> str:
    """The longest prefix of ``text`` that fits in ``cells``."""
    out, used = [], 0
    for ch in text:
        w = cell_len(ch)
        if used + w > cells:
            break
        out.append(ch)
        used += w
    return "".join(out)


def tail(text: str, cells: int) -> str:
    """The longest suffix of ``text`` that fits in ``cells``."""
    out, used = [], 0
    for ch in reversed(text):
        w = cell_len(ch)
        if used + w > cells:
            break
        out.append(ch)
        used += w
    return "".join(reversed(out))


def pad(text: str, cells: int, *, right: bool = False) -> str:
    """``text`` padded with spaces to ``cells`` (it must already fit)."""
    gap = " " * max(0, cells - cell_len(text))
    return gap + text if right else text + gap


def ellipsize(text: str, cells: int) -> str:
    """Fit ``text`` in ``cells``, keeping what tells names apart.

    A step or training keeps its distinctive end (``checkpoint_498000`` →
    ``che…498000``, then ``…498000``); a file path keeps its first component (the layer
    directory); anything else is cut in the middle.
    """
    if cell_len(text) <= cells:
        return text
    if cells <= 1:
        return ELLIPSIS[:cells]
    room = cells - 1
    if "/" in text:
        first, rest = text.split("/", 1)
        first += "/"
        if cell_len(first) < room:
            return first + ELLIPSIS + tail(rest, room - cell_len(first))
        return head(text, room) + ELLIPSIS
    m = _TAIL_TOKEN.search(text)
    keep = m.group(0) if m else ""
    if keep and cell_len(keep) <= room:
        return head(text, room - cell_len(keep)) + ELLIPSIS + keep
    if keep:
        return ELLIPSIS + tail(text, room)
    front = (room + 1) // 2
    return head(text, front) + ELLIPSIS + tail(text, room - cell_len(head(text, front)))


def middle(text: str, cells: int) -> str:
    """Cut ``text`` in the middle to fit (paths: both the start and the leaf stay readable)."""
    if cell_len(text) <= cells:
        return text
    if cells <= 1:
        return ELLIPSIS[:cells]
    room = cells - 1
    front = head(text, room // 3)
    return front + ELLIPSIS + tail(text, room - cell_len(front))

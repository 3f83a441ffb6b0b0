"""Small pure formatters shared by the widgets: sizes, ages, bars."""

from __future__ import annotations

import humanize

BAR_CHARS = " ▏▎▍▌▋▊▉█"
AGE_UNITS = ((365 * 86400, "y"), (30 * 86400, "mo"), (86400, "d"), (3600, "h"), (60, "m"))


def size(n: int) -> str:
    """Humanized decimal size, e.g. ``257.0 MB``."""
    return str(humanize.naturalsize(n, format="%.1f"))


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
    """``3 files`` / ``1 file`` with thousands separators."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def rate(bytes_done: int, seconds: float) -> str:
    """Throughput like ``1.2 GB/s``; ``-`` until there is enough time to measure."""
    if seconds < 0.2 or bytes_done <= 0:
        return "-"
    return f"{size(int(bytes_done / seconds))}/s"

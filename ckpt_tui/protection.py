"""Live-writer protection settings (a small module: the listing path imports it without the
planner)."""

from __future__ import annotations

from dataclasses import dataclass

RECENT_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Protection:
    """Live-writer protection, on by default; ``force`` on a plan lifts the first two
    (the newest valid step and steps newer than it; recent files). Pins are never lifted."""

    newest_step: bool = True
    recent_seconds: float = RECENT_SECONDS
    open_files: bool = True


__all__ = ["RECENT_SECONDS", "Protection"]

"""The key contract, one table: the help screen shows it and the README documents it."""

from __future__ import annotations

KEYS: tuple[tuple[str, str], ...] = (
    ("↑ ↓  j k", "move"),
    ("→ l Enter", "expand (loads steps / files)"),
    ("← h", "collapse, or go to the parent"),
    ("Home End PgUp PgDn", "jump"),
    ("Space", "mark / unmark the row (a training or step marks every file under it)"),
    (
        "K",
        "keep newest N (and every K, best by a metadata key, newer than): "
        "preview, then mark the rest",
    ),
    ("p", "pin / unpin a step (never marked or deleted; kept in the index)"),
    ("u", "clear all marks"),
    ("i", "invert marks within the highlighted training"),
    ("d Delete", "delete the marked files (or the highlighted row) after a confirm"),
    ("Esc", "cancel a running deletion after the current file; clear the filter"),
    ("r", "re-scan the highlighted training (or everything from the top row)"),
    ("/", "filter trainings and steps by name"),
    ("s", "cycle the step order: step, size, age"),
    ("Ctrl+P", "command palette: every action by name"),
    ("?", "this help"),
    ("q", "quit"),
)

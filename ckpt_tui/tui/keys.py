"""The key contract, one table: the help screen shows it and the README documents it; the
app's bindings and command palette entries live here too, so the three cannot drift apart."""

from __future__ import annotations

from textual.binding import Binding, BindingType

KEYS: tuple[tuple[str, str], ...] = (
    ("↑ ↓  j k", "move"),
    ("→ l Enter", "expand (loads steps / files)"),
    ("← h", "collapse, or go to the parent"),
    ("Home End PgUp PgDn", "jump"),
    (
        "Space",
        "mark / unmark the row (a training marks every step under it except protected ones)",
    ),
    (
        "K",
        "keep newest N (and every K, best by a metadata key, newer than): "
        "preview, then mark the rest",
    ),
    ("p", "pin / unpin a step (never marked or deleted; kept in the index)"),
    ("u", "clear all marks"),
    ("i", "invert marks within the highlighted training"),
    ("d Delete", "delete the marked files (or the highlighted row) after a confirm"),
    ("Esc", "stop a running deletion after the current file; clear the filter"),
    ("r", "re-scan the highlighted training (or everything from the top row)"),
    ("/", "filter trainings and steps by name"),
    ("s", "cycle the order of trainings and steps: step, size (biggest first), age"),
    ("a", "switch sizes between apparent size and disk usage"),
    ("v", "show / hide the details panel (hidden by default below 100 columns)"),
    ("H", "deletion history: who deleted what, when, and what it freed"),
    ("Ctrl+P", "command palette: every action by name"),
    ("?", "this help (scrolls)"),
    ("q", "quit (asks first while a deletion runs)"),
)

# Footer order: the keys that matter most first; ? and q always fit at 80 columns.
BINDINGS: list[BindingType] = [
    Binding("space", "toggle_mark", "Mark", id="mark"),
    Binding("K", "keep_newest", "Keep N", id="keep"),
    Binding("d,delete", "delete", "Delete", id="delete"),
    Binding("d,delete", "delete_off", "Delete", show=False, id="delete.read_only"),
    Binding("slash", "filter", "Filter", id="filter"),
    Binding("s", "sort", "Sort", id="sort"),
    Binding("question_mark", "help", "Help", id="help"),
    Binding("q", "quit_app", "Quit", id="quit"),
    Binding("escape", "stop", "Stop", id="stop"),
    # not in the footer: at 80 columns it would push q Quit out; the header says Esc clears
    Binding("escape", "clear_filter", "Clear filter", show=False, id="clear_filter"),
    Binding("p", "pin", "Pin", show=False, id="pin"),
    Binding("u", "clear_marks", "Unmark all", show=False, id="clear"),
    Binding("i", "invert", "Invert", show=False, id="invert"),
    Binding("r", "rescan", "Rescan", show=False, id="rescan"),
    Binding("a", "apparent", "Apparent/disk", show=False, id="apparent"),
    Binding("v", "details", "Details", show=False, id="details"),
    Binding("H", "history", "History", show=False, id="history"),
]

# (action, title, help) for the command palette
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("toggle_mark", "Mark / unmark", "Toggle the mark on the highlighted row"),
    ("keep_newest", "Keep newest N…", "Preview and mark all but the newest N steps"),
    ("pin", "Pin / unpin step", "A pinned step is never marked or deleted"),
    ("clear_marks", "Clear marks", "Unmark everything"),
    ("invert", "Invert marks", "Invert the marks within the highlighted training"),
    ("delete", "Delete marked…", "Delete the marked files after a confirm"),
    ("rescan", "Rescan", "Re-scan the highlighted training, or everything"),
    ("filter", "Filter…", "Filter trainings and steps by name"),
    ("sort", "Cycle sort", "Order trainings and steps by step, size or age"),
    ("apparent", "Apparent size / disk usage", "Switch every size between the two"),
    ("details", "Show / hide details", "Toggle the details panel"),
    ("expand", "Expand row", "Expand the highlighted row"),
    ("collapse", "Collapse row", "Collapse the highlighted row"),
    ("history", "Deletion history", "Who deleted what, when, and what it freed"),
    ("help", "Help", "Keys and glyphs"),
)

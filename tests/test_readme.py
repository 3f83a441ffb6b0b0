"""The README's key table is the key contract: it must name exactly the keys the app binds,
and the help screen must show exactly its rows.

Independent oracles: the README is parsed as text; the keys come from the Textual bindings
the app actually installs (``CkptApp.BINDINGS``, the tree widget's ``BINDINGS`` and the
command palette key), never from the table the help screen is built from; the help screen
is read from the running app.
"""

from __future__ import annotations

from pathlib import Path

from textual.binding import Binding
from textual.widgets import Static

from ckpt_tui.tui.app import CkptApp
from ckpt_tui.tui.screens.help import HelpScreen
from ckpt_tui.tui.widgets.tree import CheckpointTree

README = Path(__file__).resolve().parent.parent / "README.md"

# Textual key names -> how the README writes them.
README_NAME = {
    "up": "↑",
    "down": "↓",
    "right": "→",
    "left": "←",
    "enter": "Enter",
    "home": "Home",
    "end": "End",
    "pageup": "PgUp",
    "pagedown": "PgDn",
    "space": "Space",
    "delete": "Delete",
    "escape": "Esc",
    "slash": "/",
    "question_mark": "?",
    "ctrl+p": "Ctrl+P",
}


def readme_key_rows() -> list[tuple[str, str]]:
    """(key cell without backticks, action) for each row of the table under '### Keys'."""
    section = README.read_text().split("\n### Keys\n", 1)[1]
    rows: list[tuple[str, str]] = []
    started = False
    for line in section.splitlines():
        if not line.startswith("|"):
            if started:
                break
            continue
        started = True
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 2, f"a key table row with {len(cells)} cells: {line!r}"
        key, action = cells
        if key == "key" or set(key) <= {"-"}:
            continue  # header, separator
        assert key.startswith("`") and key.endswith("`"), line
        rows.append((key.strip("`"), action))
    return rows


def _keys_of(bindings: list[object]) -> set[str]:
    out: set[str] = set()
    for b in bindings:
        key = b.key if isinstance(b, Binding) else b[0]  # type: ignore[index]
        out.update(k.strip() for k in key.split(","))
    return out


def bound_keys() -> set[str]:
    """Every key the app binds, in the README's spelling."""
    keys = _keys_of(list(CkptApp.BINDINGS)) | _keys_of(list(CheckpointTree.BINDINGS))
    if CkptApp.ENABLE_COMMAND_PALETTE:
        keys.add(CkptApp.COMMAND_PALETTE_BINDING)
    return {README_NAME.get(k, k) for k in keys}


def test_readme_key_table_names_exactly_the_bound_keys() -> None:
    rows = readme_key_rows()
    assert len(rows) >= 10, "the README key table was not found"
    documented = [tok for key, _ in rows for tok in key.split()]
    assert len(documented) == len(set(documented)), "a key is documented twice"
    bound = bound_keys()
    assert set(documented) - bound == set(), "README documents keys the app does not bind"
    assert bound - set(documented) == set(), "the app binds keys the README does not document"


async def test_help_screen_shows_exactly_the_readme_key_table(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    app = CkptApp(str(root), str(tmp_path / "index.sqlite3"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        for _ in range(200):  # the screen is pushed by the key handler: wait for it
            if isinstance(app.screen, HelpScreen):
                break
            await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text", Static).render())
    # a long description wraps under itself (indented): one row per key again
    joined: list[str] = []
    for line in text.splitlines():
        if line.startswith("  ") and line.strip() and joined and joined[-1]:
            joined[-1] += " " + line.strip()
        else:
            joined.append(line)
    shown = [" ".join(line.split()) for line in joined]
    rows = readme_key_rows()
    expected = [" ".join(f"{key} {action}".split()) for key, action in rows]
    # The help screen shows the README's rows, in its order, as one block (a title may come
    # before it; a blank line or the end after it).
    assert expected[0] in shown, f"the help screen does not show {expected[0]!r}"
    start = shown.index(expected[0])
    assert shown[start : start + len(expected)] == expected
    end = start + len(expected)
    assert end == len(shown) or shown[end] == "", f"a key row the README lacks: {shown[end]!r}"

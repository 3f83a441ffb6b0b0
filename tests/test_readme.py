"""The README documents the key contract exactly as the help screen shows it."""

from __future__ import annotations

from pathlib import Path

from ckpt_tui.tui.keys import KEYS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_key_table_matches_the_help_screen() -> None:
    text = README.read_text()
    for key, action in KEYS:
        assert f"| `{key}` | {action} |" in text, f"README misses the key {key!r}"

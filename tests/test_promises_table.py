"""tests/README.md traces README promises to tests: every test it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_named_in_the_promise_table_exists() -> None:
    text = (TESTS / "README.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("|")]
    named = 0
    missing: list[str] = []
    for row in rows:
        current: Path | None = None
        for ref in re.findall(r"`([^`]*)`", row):
            m = re.fullmatch(r"((?:rel/)?[\w/]+\.py)?(?:::)?(test_\w+)?", ref)
            if not m or not (m.group(1) or m.group(2)):
                continue
            if m.group(1):
                current = TESTS / m.group(1).replace("rel/", "reliability/", 1)
                if not current.exists():
                    missing.append(ref)
                    continue
            if m.group(2):
                named += 1
                if current is None or not re.search(
                    rf"^(async )?def {m.group(2)}\(", current.read_text(), re.M
                ):
                    missing.append(ref)
    assert named >= 60, "the promise table lost its rows"
    assert missing == []

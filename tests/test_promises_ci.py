"""CI draws the same hypothesis examples every run: a red CI is a real failure, not a new
random draw (issue 14). The profile is registered in tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = (
    "import tests.conftest\n"
    "from hypothesis import settings\n"
    "s = settings.default\n"
    "print(s.derandomize, s.database is None, s.deadline)\n"
)


def _profile(**env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def test_ci_profile_is_derandomized_without_a_database() -> None:
    assert _profile(CI="true") == "True True None"
    assert _profile() == "False False None"  # locally: random draws, failures replayed

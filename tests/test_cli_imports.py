"""Start-up budget: each command imports only what it uses (``python -X importtime`` lists it).

Every command pays its imports before doing anything: SQLAlchemy's asyncio extension alone is
most of a second on a small machine, textual half a second. So ``--help`` and ``--version``
import neither the service nor any of the heavy libraries, and the commands that only read
never import the TUI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_training

# Nothing beyond click: what `ckpt-tui --help` / `--version` / `CMD --help` may not import.
NOT_AT_START = (
    "sqlalchemy",
    "aiosqlite",
    "textual",
    "rich",
    "humanize",
    "platformdirs",
    "asyncio",
    "ckpt_tui.service",
    "ckpt_tui.db",
    "ckpt_tui.clifmt",
)
NOT_FOR_READING = ("textual", "rich", "ckpt_tui.tui")
NOT_FOR_LISTING = ("ckpt_tui.deletion", "ckpt_tui.planning")


def imported(*args: str) -> set[str]:
    """Modules that ``python -m ckpt_tui ARGS`` imported (stdin and stdout are not terminals)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ckpt_tui", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.add(name)
    assert "click" in names  # the parse worked: click is always imported
    return names


def offenders(names: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == b or n.startswith(b + ".") for b in banned))


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["-h"], ["scan", "--help"], ["ls", "--help"], ["prune", "--help"]],
    ids=" ".join,
)
def test_help_and_version_import_only_click(args: list[str]) -> None:
    assert offenders(imported(*args), NOT_AT_START) == []


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    make_training(root, "train_a", [1000, 2000, 3000])
    return root


@pytest.mark.parametrize("command", ["ls", "scan"])
def test_reading_commands_do_not_import_the_tui(
    command: str, small_root: Path, tmp_path: Path
) -> None:
    db = str(tmp_path / "index.sqlite3")
    names = imported(command, str(small_root), "--db", db)
    assert "ckpt_tui.service" in names
    assert offenders(names, NOT_FOR_READING) == []


def test_ls_does_not_import_deletion_or_planning(small_root: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "index.sqlite3")
    assert offenders(imported("scan", str(small_root), "--db", db), NOT_FOR_LISTING) == []
    assert offenders(imported("ls", str(small_root), "--db", db), NOT_FOR_LISTING) == []

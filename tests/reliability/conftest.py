"""Shared fixtures for the reliability suite: trees of real safetensors files, a victim
directory outside the root whose files are hashed before and checked after, a real SQLite
index in ``tmp_path``, and helpers to run the real CLI in a subprocess.

Everything here runs as root on one Linux machine. Where a fault cannot be produced for real
(root ignores permission bits), tests make the OS call raise and say so in a comment.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ckpt_tui.demo import write_sparse_safetensors
from ckpt_tui.service import CheckpointService

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "_runner.py"  # the real CLI, with optional fault hooks from the environment
OLD = 3600.0  # seconds: tree files are this old, so "modified recently" protection is off


# ----------------------------------------------------------------------------- the victim


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Victim:
    """A directory outside the root full of sentinel files, hashed before the test."""

    path: Path
    hashes: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> None:
        self.hashes = {
            str(p.relative_to(self.path)): _digest(p)
            for p in sorted(self.path.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }

    def current(self) -> dict[str, str]:
        return {
            str(p.relative_to(self.path)): _digest(p)
            for p in sorted(self.path.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }

    def intact(self) -> bool:
        return self.current() == self.hashes

    def assert_intact(self) -> None:
        now = self.current()
        lost = sorted(set(self.hashes) - set(now))
        changed = sorted(k for k in self.hashes if k in now and now[k] != self.hashes[k])
        assert not lost and not changed, f"victim damaged: lost {lost}, changed {changed}"


def make_victim(path: Path) -> Victim:
    """Sentinels named like checkpoint files, so a redirected unlink would hit them."""
    path.mkdir(parents=True)
    (path / "checkpoint.safetensors").write_bytes(b"VICTIM checkpoint " * 50)
    (path / "model.safetensors").write_bytes(b"VICTIM model " * 50)
    (path / "notes.txt").write_text("precious research notes\n")
    (path / "layer_0").mkdir()
    (path / "layer_0" / "checkpoint.safetensors").write_bytes(b"VICTIM nested " * 50)
    v = Victim(path)
    v.snapshot()
    return v


@pytest.fixture
def victim(tmp_path: Path) -> Victim:
    return make_victim(tmp_path / "victim")


# ----------------------------------------------------------------------------- trees


TINY = {"w": ("F32", (4, 4))}


def step_dir(root: Path, training: str, step: int) -> Path:
    return root / training / "checkpoints" / f"checkpoint_{step}"


def write_ckpt(path: Path, *, age: float = OLD) -> Path:
    write_sparse_safetensors(path, TINY, {"written": "test"})
    if age:
        t = time.time() - age
        os.utime(path, (t, t))
    return path


@dataclass
class Tree:
    root: Path
    trainings: list[str]
    steps: list[int]
    layers: int

    def files_of(self, training: str, step: int) -> list[Path]:
        d = step_dir(self.root, training, step)
        return [d / f"layer_{n}" / "checkpoint.safetensors" for n in range(self.layers)]

    def all_files(self) -> list[Path]:
        return [p for t in self.trainings for s in self.steps for p in self.files_of(t, s)]

    def newest_files(self) -> list[Path]:
        return [p for t in self.trainings for p in self.files_of(t, max(self.steps))]


def build_tree(
    root: Path,
    *,
    trainings: int = 2,
    steps: Sequence[int] = (100, 200, 900, 1000),
    layers: int = 2,
    age: float = OLD,
) -> Tree:
    """miStudio layout: <training>/checkpoints/checkpoint_<step>/layer_<n>/checkpoint.safetensors.

    Existing files are left as they are, so a partly pruned tree can be topped up.
    """
    names = [f"train_{i:03d}" for i in range(trainings)]
    tree = Tree(root, names, sorted(steps), layers)
    for p in tree.all_files():
        if not p.exists():
            write_ckpt(p, age=age)
    return tree


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "index" / "index.sqlite3"


@pytest.fixture
async def svc(db: Path) -> AsyncIterator[CheckpointService]:
    s = await CheckpointService.open(str(db))
    try:
        yield s
    finally:
        await s.close()


async def scan(svc: CheckpointService, root: Path) -> int:
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    return info.id


# ----------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class IndexedFile:
    id: int
    path: Path
    state: str
    error: str | None
    step_path: Path


def index_files(db: Path) -> list[IndexedFile]:
    """Every file row, read with sqlite3 (not through the code under test)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT f.id, r.path, s.relpath, f.relpath, f.state, f.error FROM files f "
            "JOIN steps s ON s.id = f.step_id JOIN trainings t ON t.id = s.training_id "
            "JOIN roots r ON r.id = t.root_id"
        ).fetchall()
    finally:
        con.close()

    def text(v: object) -> str:  # a hostile row may hold a blob or a number
        return os.fsdecode(v) if isinstance(v, bytes) else str(v)

    return [
        IndexedFile(i, Path(text(r), text(s), text(f)), st, e, Path(text(r), text(s)))
        for i, r, s, f, st, e in rows
    ]


def index_steps(db: Path) -> list[Path]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT r.path, s.relpath FROM steps s JOIN trainings t ON t.id = s.training_id "
            "JOIN roots r ON r.id = t.root_id"
        ).fetchall()
    finally:
        con.close()
    return [Path(r, s) for r, s in rows]


def sql(db: Path, statement: str, params: Iterable[object] = ()) -> None:
    con = sqlite3.connect(db)
    try:
        con.execute(statement, tuple(params))
        con.commit()
    finally:
        con.close()


def files_on_disk(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def empty_dirs(root: Path) -> list[Path]:
    """Directories below the root with nothing in them (the root itself excluded)."""
    return sorted(
        Path(d)
        for d, subdirs, files in os.walk(root)
        if Path(d) != root and not subdirs and not files
    )


def assert_consistent(db: Path, root: Path) -> None:
    """The deletion contract's invariants, checked against the disk."""
    rows = index_files(db)
    deleting = [r.path for r in rows if r.state != "active"]
    assert not deleting, f"rows left in state 'deleting': {deleting[:5]}"
    gone = [r.path for r in rows if not (r.path.exists() or r.path.is_symlink())]
    assert not gone, f"the index lists files that are gone: {gone[:5]}"
    gone_steps = [s for s in index_steps(db) if not s.is_dir()]
    assert not gone_steps, f"the index lists step directories that are gone: {gone_steps[:5]}"
    left = empty_dirs(root)
    assert not left, f"emptied directories left behind: {left[:5]}"


# ----------------------------------------------------------------------------- the CLI


def cli_env(**faults: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CKPT_TUI_DB", None)
    env.update({f"CKPT_FAULT_{k.upper()}": v for k, v in faults.items()})
    return env


def run_cli(
    *args: str | Path, timeout: float = 120, **faults: str
) -> subprocess.CompletedProcess[str]:
    """``python -m ckpt_tui ARGS`` (through the fault runner when faults are given)."""
    cmd = [sys.executable, str(RUNNER)] if faults else [sys.executable, "-m", "ckpt_tui"]
    return subprocess.run(
        [*cmd, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(**faults),
        stdin=subprocess.DEVNULL,
    )


def popen_cli(*args: str | Path, **faults: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(RUNNER)] if faults else [sys.executable, "-m", "ckpt_tui"]
    return subprocess.Popen(
        [*cmd, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(**faults),
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(
    proc: subprocess.CompletedProcess[str], *needles: str, code: int = 1
) -> None:
    """Refused the way a user should see it: exit code 1 (README: "the input was refused"),
    one line, no traceback."""
    assert proc.returncode == code, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {proc.stderr!r}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"

"""Crash recovery: a prune killed at any moment is finished by the next deleting command.

The deletion contract: rows are marked ``deleting`` and committed before any unlink, and the
next deleting command (``open(recover=True)``, ``execute``) finishes them. So after any crash
the index lists no file that is gone, nothing stays ``deleting``, no emptied layer/step
directory is left behind, and finishing the prune leaves exactly the newest step of each training.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from ckpt_tui import fs
from ckpt_tui.deletion import Deleter
from ckpt_tui.service import CheckpointService

from .conftest import (
    assert_consistent,
    build_tree,
    files_on_disk,
    index_files,
    popen_cli,
    run_cli,
    scan,
)

STEPS = tuple(100 * (i + 1) for i in range(24))  # checkpoint_100 ... checkpoint_2400
KILLS = 22
SEED = 20240604


class Crash(BaseException):
    """Stands in for the process dying at a named point (not caught by `except Exception`)."""


def _prune_args(root: Path, db: Path) -> list[str | Path]:
    return ["prune", root, "--keep", "1", "--yes", "--json", "--db", db, "--force"]


def _kill_at_random_moment(proc: subprocess.Popen[str], db: Path, rng: random.Random) -> bool:
    """SIGKILL the prune at a random moment; False if it finished first.

    A third of the kills land anywhere from start-up on (opening, planning, claiming); the
    rest land a random moment after the first deletion intent is committed, so most of them
    hit the unlink / collapse / finish phases whatever the machine's speed.
    """
    if rng.random() < 1 / 3:
        delay = rng.uniform(0.05, 1.0)
    else:
        delay = rng.uniform(0.0, 0.3)
        con = sqlite3.connect(db, timeout=5, isolation_level=None)
        try:
            while proc.poll() is None:
                with contextlib.suppress(sqlite3.OperationalError):
                    if con.execute(
                        "SELECT 1 FROM files WHERE state = 'deleting' LIMIT 1"
                    ).fetchone():
                        break
                time.sleep(0.003)
        finally:
            con.close()
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True
    return False


def _assert_final(db: Path, root: Path, expected: set[Path]) -> None:
    assert files_on_disk(root) == expected, "survivors differ from the newest step of each training"
    assert {r.path for r in index_files(db)} == expected
    assert_consistent(db, root)


@pytest.mark.slow
async def test_sigkill_at_random_moments_then_recover(tmp_path: Path) -> None:
    """A real `ckpt-tui prune` subprocess is SIGKILLed >= 20 times at random moments."""
    rng = random.Random(SEED)
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    kills = mid_deletion = rounds = 0
    while kills < KILLS:
        rounds += 1
        assert rounds < 40, "kills keep missing the prune; retune the delays"
        tree = build_tree(root, trainings=20, steps=STEPS, layers=3)  # tops up what went
        expected = set(tree.newest_files())
        scanned = run_cli("scan", root, "--db", db, "--json")
        assert scanned.returncode == 0, scanned.stderr
        while True:
            before = files_on_disk(root)
            proc = popen_cli(*_prune_args(root, db))
            if not _kill_at_random_moment(proc, db, rng):
                _, err = proc.communicate()
                assert proc.returncode == 0, err
                _assert_final(db, root, expected)
                break
            kills += 1
            proc.communicate()
            deleting = sum(r.state == "deleting" for r in index_files(db))
            if deleting and files_on_disk(root) != before:
                mid_deletion += 1  # killed with deletions claimed and some files already gone
            # The next deleting command finishes what the killed process committed to.
            async with await CheckpointService.open(str(db), recover=True):  # a deleting command
                pass
            assert_consistent(db, root)
            assert expected <= files_on_disk(root), "a newest-step file was deleted"
            if kills >= KILLS:
                break
    # Finish the prune: exactly the newest step of each training survives.
    done = run_cli(*_prune_args(root, db))
    assert done.returncode == 0, done.stderr
    _assert_final(db, root, expected)
    assert mid_deletion >= 5, f"only {mid_deletion} of {kills} kills landed mid-deletion"


@pytest.mark.parametrize("point", ["after_claim", "after_unlink", "mid_collapse", "before_finish"])
async def test_crash_at_each_named_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    """An exception injected at each step of a deletion, then a fresh open recovers."""
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=2, steps=(100, 200, 300), layers=3)
    expected = set(tree.newest_files())
    svc = await CheckpointService.open(str(db))
    try:
        root_id = await scan(svc, root)
        plan = await svc.plan_retention(root_id, 1, force=True)
        assert plan.file_count == 12
        unlinks = [0]
        real_unlink, real_rmdir = fs.os.unlink, fs.os.rmdir

        def unlink(name: str, *, dir_fd: int | None = None) -> None:
            real_unlink(name, dir_fd=dir_fd)
            unlinks[0] += 1
            if point == "after_unlink" and unlinks[0] == 5:
                raise Crash

        rmdirs = [0]

        def rmdir(name: str, *, dir_fd: int | None = None) -> None:
            real_rmdir(name, dir_fd=dir_fd)
            rmdirs[0] += 1
            if point == "mid_collapse" and rmdirs[0] == 2:  # a layer gone, its step not yet
                raise Crash

        async def finish(*a: object, **k: object) -> None:
            raise Crash

        def claim_then_crash(orig):  # type: ignore[no-untyped-def]
            async def claim(self: Deleter, ids: list[int], *a: object, **k: object) -> set[int]:
                await orig(self, ids, *a, **k)
                raise Crash

            return claim

        monkeypatch.setattr(fs.os, "unlink", unlink)
        monkeypatch.setattr(fs.os, "rmdir", rmdir)
        if point == "after_claim":
            monkeypatch.setattr(Deleter, "_claim", claim_then_crash(Deleter._claim))
        if point == "before_finish":
            monkeypatch.setattr(Deleter, "_finish", finish)
        with pytest.raises(Crash):
            await svc.execute(plan)
        monkeypatch.undo()
    finally:
        await svc.close()
    assert any(r.state == "deleting" for r in index_files(db)), "the crash left no intent"
    async with await CheckpointService.open(str(db), recover=True):  # a deleting command
        pass
    assert_consistent(db, root)
    _assert_final(db, root, expected)

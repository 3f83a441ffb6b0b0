"""A deletion whose index is locked by another program part-way through (a browser's
rescan, a second tool writing it): the run stops with one true line (how many files went
before it, that nothing after them was touched), never a traceback and never "nothing was
deleted" after files went; the next deleting command records what went.

Real files, a real SQLite index, and the lock is real: a second ``sqlite3`` connection
holding ``BEGIN IMMEDIATE``. The busy timeout is shortened (a setting, not a mock) so a
refused write is met in a tenth of a second instead of five. The moment the lock is taken
is chosen through the run's cancel event, which the deleter asks before each batch (on
its own thread) and before each file (on the unlinking thread).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ckpt_tui.db import engine
from ckpt_tui.errors import IndexError_
from ckpt_tui.planning import Protection
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import Outcome
from tests.conftest import make_training, write_checkpoint
from tests.test_promises_planning_mut import _scanned, _sql

STEPS = range(100, 3100, 100)  # 30 steps of 3 files: the first batch (64 files) is 22 steps


class Hook(threading.Event):
    """A cancel event that is never set; ``when(thread_is_main)`` is asked at each check."""

    def __init__(self, when: Callable[[bool], None]) -> None:
        super().__init__()
        self.when = when
        self.main = threading.current_thread()

    def is_set(self) -> bool:
        self.when(threading.current_thread() is self.main)
        return super().is_set()


class Locker:
    """Takes the index's write lock once, from another connection, until released."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.con: sqlite3.Connection | None = None

    def take(self) -> None:
        if self.con is None:
            self.con = sqlite3.connect(self.db, isolation_level=None, check_same_thread=False)
            self.con.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.con is not None:
            self.con.execute("ROLLBACK")
            self.con.close()
            self.con = None


def on_disk(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.safetensors")}


@pytest.fixture
def quick_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "BUSY_TIMEOUT_MS", 100)


async def _open(db: str) -> CheckpointService:
    return await CheckpointService.open(db, protection=Protection(newest_step=False))


@pytest.mark.usefixtures("quick_busy")
async def test_a_lock_after_the_first_unlinks_stops_the_run_with_what_went(
    tmp_path: Path, db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    make_training(root, "t", STEPS)
    before = on_disk(root)
    locker = Locker(db_path)
    svc = await _open(db_path)
    try:
        rid = await _scanned(svc, root)
        plan = await svc.plan_retention(rid, 1)
        assert plan.file_count == 87
        first = root / "t" / "checkpoints" / "checkpoint_100"

        def when(main: bool) -> None:  # an unlink has happened: lock before the batch ends
            if not main and not first.exists():
                locker.take()

        with caplog.at_level(logging.WARNING):
            result = await svc.execute(plan, cancel=Hook(when))
    finally:
        locker.release()
        await svc.close()
    gone = before - on_disk(root)
    deleted = [r for r in result.results if r.outcome is Outcome.DELETED]
    assert len(gone) == len(deleted) == 66, "the first batch went, whole steps"
    assert {str(Path(r.path).relative_to(root)) for r in deleted} == gone
    assert result.stopped == (
        f"index {db_path} is locked by another program; 66 files deleted before it (the "
        "last of them are recorded by the next deleting command), nothing after them was "
        "touched; run again to resume"
    )
    skipped = [r for r in result.results if r.outcome is Outcome.SKIPPED]
    assert len(skipped) == 21 and {r.error for r in skipped} == {result.stopped}
    assert not any(r.exc_info for r in caplog.records), "no traceback in the log"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "could not record the run's outcome in the history: database is locked"
    ]
    # the lock gone, the next deleting command records what went and deletes the rest
    svc = await _open(db_path)
    try:
        again = await svc.execute(await svc.plan_retention(rid, 1))
    finally:
        await svc.close()
    assert again.recovered == 66 and again.stopped is None
    assert on_disk(root) == {f"t/checkpoints/checkpoint_3000/{n}" for n in _layers()}
    assert _sql(db_path, "SELECT count(*) FROM files") == [(3,)]
    runs = _sql(db_path, "SELECT outcome, finished_by FROM deletion_runs ORDER BY id")
    assert runs == [("interrupted", 2), ("finished", None)]


@pytest.mark.usefixtures("quick_busy")
async def test_a_lock_before_a_later_batch_leaves_it_untouched_and_says_what_went(
    tmp_path: Path, db_path: str
) -> None:
    root = tmp_path / "root"
    make_training(root, "t", STEPS)
    before = on_disk(root)
    locker = Locker(db_path)
    svc = await _open(db_path)
    try:
        rid = await _scanned(svc, root)
        plan = await svc.plan_retention(rid, 1)
        first = root / "t" / "checkpoints" / "checkpoint_100"

        def when(main: bool) -> None:  # the loop's check before the second batch
            if main and not first.exists():
                locker.take()

        result = await svc.execute(plan, cancel=Hook(when))
        locker.release()
        rows = _sql(db_path, "SELECT state, count(*) FROM files GROUP BY state")
    finally:
        locker.release()
        await svc.close()
    assert len(before - on_disk(root)) == 66
    assert result.stopped == (
        f"index {db_path} is locked by another program; 66 files deleted before it, "
        "nothing after them was touched; run again to resume"
    )
    assert rows == [("active", 24)], "the first batch recorded, nothing else claimed"


@pytest.mark.usefixtures("quick_busy")
async def test_a_lock_before_the_first_claim_deletes_nothing_and_says_so(
    tmp_path: Path, db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    make_training(root, "t", STEPS)
    before = on_disk(root)
    locker = Locker(db_path)
    svc = await _open(db_path)
    try:
        rid = await _scanned(svc, root)
        plan = await svc.plan_retention(rid, 1)

        def when(main: bool) -> None:  # the loop's check before the first batch
            if main:
                locker.take()

        with caplog.at_level(logging.DEBUG, "ckpt_tui.deletion"), pytest.raises(IndexError_) as err:
            await svc.execute(plan, cancel=Hook(when))
    finally:
        locker.release()
        await svc.close()
    assert str(err.value) == (f"index {db_path} is locked by another program; nothing was deleted")
    assert on_disk(root) == before
    # recording the failed run met the same lock: one line, its traceback only for debugging
    logged = [(r.levelno, r.getMessage(), bool(r.exc_info)) for r in caplog.records]
    assert logged == [
        (
            logging.WARNING,
            "could not record the failed run in the history: database is locked",
            False,
        ),
        (logging.DEBUG, "recording the failed run", True),
    ]
    assert _sql(db_path, "SELECT DISTINCT state FROM files") == [("active",)]


def _layers() -> tuple[str, ...]:
    return (
        "layer_7/checkpoint.safetensors",
        "layer_14/checkpoint.safetensors",
        "layer_18/checkpoint.safetensors",
    )


@pytest.mark.usefixtures("quick_busy")
async def test_one_file_steps_left_unrecorded_are_credited_to_the_run_that_deleted_them(
    tmp_path: Path, db_path: str
) -> None:
    """Steps of a single file (``checkpoint_N/sae.safetensors``) whose rows a stopped run
    left claimed: the next deleter records each under the run that claimed it."""
    root = tmp_path / "root"
    for step in range(100, 8100, 100):  # 80 one-file steps: the first batch is 64
        write_checkpoint(root / "b" / f"checkpoint_{step}" / "sae.safetensors", step)
    locker = Locker(db_path)
    svc = await _open(db_path)
    try:
        rid = await _scanned(svc, root)
        first = root / "b" / "checkpoint_100"

        def when(main: bool) -> None:
            if not main and not first.exists():
                locker.take()

        stopped = await svc.execute(await svc.plan_retention(rid, 1), cancel=Hook(when))
        locker.release()
        assert stopped.stopped is not None and "64 files deleted before it" in stopped.stopped
        finished = await svc.finish_interrupted()  # as prune and rm do before they plan
        again = await svc.execute(await svc.plan_retention(rid, 1))
    finally:
        locker.release()
        await svc.close()
    assert finished == 64 and again.recovered == 0 and again.stopped is None
    assert sorted(p.parent.name for p in root.rglob("*.safetensors")) == ["checkpoint_8000"]
    per_run = _sql(
        db_path,
        "SELECT run_id, count(*), sum(files_deleted) FROM deletion_steps GROUP BY run_id",
    )
    assert per_run == [(1, 64, 64), (2, 15, 15)]


async def test_an_index_that_refuses_the_write_after_an_unlink_is_named_with_its_error(
    tmp_path: Path, db_path: str
) -> None:
    """Not a lock but a failing write (here a trigger of the index refuses to drop file
    rows, a real SQLite error): the run names the index and the error and counts the one
    file that went; finishing it later fails the same way, in one line, until the index
    accepts the write, and then records it."""
    root = tmp_path / "root"
    for step in (100, 200):
        write_checkpoint(root / "b" / f"checkpoint_{step}" / "sae.safetensors", step)
    svc = await _open(db_path)
    try:
        rid = await _scanned(svc, root)
        refuse = "CREATE TRIGGER refuse BEFORE DELETE ON files BEGIN SELECT RAISE(ABORT, 'no'); END"
        _sql(db_path, refuse)
        result = await svc.execute(await svc.plan_retention(rid, 1))
        assert result.stopped == (
            f"cannot record the deletion in index {db_path}: no; 1 file deleted before it (the "
            "last of them are recorded by the next deleting command), nothing after them was "
            "touched; run again to resume"
        )
        assert not (root / "b" / "checkpoint_100").exists()
        with pytest.raises(IndexError_) as err:
            await svc.finish_interrupted()
        assert str(err.value) == (
            f"cannot record the deletion in index {db_path}: no; "
            "the files just deleted are recorded by the next deleting command"
        )
        _sql(db_path, "DROP TRIGGER refuse")
        assert await svc.finish_interrupted() == 1
    finally:
        await svc.close()
    assert _sql(db_path, "SELECT relpath FROM files") == [("sae.safetensors",)]
    assert sorted(p.parent.name for p in root.rglob("*.safetensors")) == ["checkpoint_200"]

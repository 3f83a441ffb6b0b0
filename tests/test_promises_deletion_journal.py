"""What a deletion run leaves in the index and reports, pinned where mutating
``ckpt_tui/deletion.py`` went unnoticed (issue 14): files found in a step folder that the
index never knew, the step and training rows a run drops (only its own), claims of a step of
a thousand files, the claim's time an interrupted run is shown with, rows another run
claimed never taken over by a tampered plan, a root gone from the index or replaced, an
index that refuses the run's history row, and the miStudio intent a run commits with its
claim (its document, and damaged intents beside it).

Real safetensors files in ``tmp_path``, a real SQLite index read back with ``sqlite3``, the
real service; PostgreSQL with miStudio's schema for the miStudio part. The oracles are the
disk, the index and miStudio's rows, never the plan that was carried out.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ckpt_tui.deletion import REFUSED
from ckpt_tui.errors import IndexBusy, IndexError_, RootError
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import DeleteProgress, Outcome, Plan
from tests.conftest import make_training, write_checkpoint
from tests.test_mistudio import DONE, MiDB, db, layer_dirs, mi, on_disk, studio
from tests.test_promises_deletion_locked import Locker, quick_busy
from tests.test_promises_deletion_mistudio import (
    _display,
    _intents,
    _interrupted,
    _repair,
    _step,
    writer,
)
from tests.test_promises_deletion_mut import LAYERS, _files, _rows, _step_id, _step_rows, tree
from tests.test_promises_planning_mut import _scanned, _sql

__all__ = [
    "db",
    "mi",
    "quick_busy",
    "tree",
    "writer",
]  # fixtures, shared with the modules they are from

DEL = "ckpt_tui.deletion"
SKIPPED_CLAIMED = "no longer in the index, or claimed by another deleter"


async def _plan(svc: CheckpointService, db: str, rid: int, *steps: int) -> Plan:
    """A plan of training t's ``steps`` (protections lifted by the service)."""
    return await svc.plan_steps(rid, [_step_id(db, f"t/checkpoints/checkpoint_{n}") for n in steps])


# what is left in a step folder after the run ----------------------------------------------


async def test_only_files_the_index_never_knew_are_reported_as_appeared(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Steps 100 and 200 planned. Step 100 goes whole. Step 200 holds a file its layout does
    not name (foreign, indexed, kept), one planned file changed since the scan (left) and a
    file written after the scan: only that last one is reported as appeared, though step
    100 before it was removed. Step 200's emptied layer folders go, reported without a step
    (the step stays)."""
    root, ck = tree
    s200 = ck / "checkpoint_200"
    notes = s200 / "notes.txt"
    notes.write_text("the run's notes")
    rid = await _scanned(svc_unprotected, root)
    sid100 = _step_id(db_path, "t/checkpoints/checkpoint_100")
    plan = await _plan(svc_unprotected, db_path, rid, 100, 200)
    assert [f.path for f in plan.foreign] == [str(notes)]
    changed = s200 / "layer_1" / "checkpoint.safetensors"
    with changed.open("ab") as fh:
        fh.write(b"appended after the scan")
    late = s200 / "late.bin"
    late.write_bytes(b"written after the scan")
    events: list[DeleteProgress] = []
    result = await svc_unprotected.execute(plan, events.append)
    assert result.appeared == (str(late),)
    assert [(r.path, r.outcome) for r in result.results if r.outcome != Outcome.DELETED] == [
        (str(changed), Outcome.CHANGED)
    ]
    assert result.removed_step_ids == (sid100,)
    assert sorted(p.name for p in s200.iterdir()) == ["late.bin", "layer_1", "notes.txt"]
    removed = [(set(e.removed_dirs), e.removed_step_ids) for e in events if e.removed_dirs]
    s100 = ck / "checkpoint_100"
    assert removed == [
        ({str(s100)} | {str(s100 / layer) for layer in LAYERS}, (sid100,)),
        ({str(s200 / "layer_0"), str(s200 / "layer_2")}, ()),
    ]


# the step and training rows a run drops ---------------------------------------------------


async def test_a_run_drops_the_rows_of_its_own_vanished_steps_only(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Indexed besides t's steps: an empty step folder of t (checkpoint_900) and a training
    u whose only step is an empty folder, both removed by hand since the scan, and a
    training row v with no steps (inserted with sqlite3, as a hand edit or another tool
    leaves it). Steps 100 and 300 of t are deleted: step 100's row was rewritten since the
    plan to a path that is no step path (the run cannot judge it on disk, but it removed
    the folder itself: the row goes); step 300's folder, with a foreign file in it, was
    removed by hand while the plan was shown (its foreign file's row is no file this run
    deleted: the step row and that row stay for the next scan). Nothing else is dropped:
    not the rows of other steps whose folders are gone, nor a training this run never
    touched."""
    root, ck = tree
    (ck / "checkpoint_900").mkdir()
    (root / "u" / "checkpoints" / "checkpoint_5").mkdir(parents=True)
    (ck / "checkpoint_300" / "notes.txt").write_text("foreign")
    rid = await _scanned(svc_unprotected, root)
    _sql(
        db_path,
        "INSERT INTO trainings (root_id, name, relpath) VALUES (?, 'v', 'v/checkpoints')",
        (rid,),
    )
    plan = await _plan(svc_unprotected, db_path, rid, 100, 300)
    sid100 = _step_id(db_path, "t/checkpoints/checkpoint_100")
    _sql(db_path, "UPDATE steps SET relpath = '../elsewhere' WHERE id = ?", (sid100,))
    for gone in (ck / "checkpoint_900", root / "u", ck / "checkpoint_300"):
        shutil.rmtree(gone)
    result = await svc_unprotected.execute(plan)
    assert result.removed_step_ids == (sid100,)
    assert {r.outcome for r in result.results} == {Outcome.DELETED, Outcome.ALREADY_GONE}
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint_200"]
    assert _step_rows(db_path) == {
        "t/checkpoints/checkpoint_200",
        "t/checkpoints/checkpoint_300",
        "t/checkpoints/checkpoint_900",
        "u/checkpoints/checkpoint_5",
    }
    assert sorted(str(n) for (n,) in _sql(db_path, "SELECT name FROM trainings")) == [
        "t",
        "u",
        "v",
    ]
    assert [k for k in _rows(db_path) if "checkpoint_300" in k] == [
        "t/checkpoints/checkpoint_300/notes.txt"
    ]


# a step of a thousand files -----------------------------------------------------------------


async def test_a_step_of_a_thousand_files_is_claimed_put_back_and_deleted_whole(
    tmp_path: Path,
    svc_unprotected: CheckpointService,
    db_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One step of 1000 files (one batch, two IN clauses of ids). Its filesystem fails at
    the first unlink (EIO, raised by os.unlink: a fault the test cannot cause for real):
    every claimed row is put back to active, none left claimed. Run again: every file is
    claimed and deleted, and every row dropped with the step."""
    root = tmp_path / "root"
    step = root / "big" / "checkpoints" / "checkpoint_1"
    for i in range(1000):
        write_checkpoint(step / f"layer_{i}" / "checkpoint.safetensors", 1, i)
    rid = await _scanned(svc_unprotected, root)
    plan = await svc_unprotected.plan_steps(
        rid, [_step_id(db_path, "big/checkpoints/checkpoint_1")]
    )
    assert plan.file_count == 1000

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "unlink", unlink)  # the os module fs calls
    stopped = await svc_unprotected.execute(plan)
    monkeypatch.undo()
    assert stopped.stopped is not None and os.strerror(errno.EIO) in stopped.stopped
    assert {r.outcome for r in stopped.results} == {Outcome.SKIPPED}
    assert _sql(db_path, "SELECT state, count(*) FROM files GROUP BY state") == [("active", 1000)]
    assert len(_files(step)) == 1000
    result = await svc_unprotected.execute(plan)
    assert result.ok and len(result.deleted) == 1000
    assert not step.exists()
    assert _sql(db_path, "SELECT count(*) FROM files") == [(0,)]
    assert _step_rows(db_path) == set()


# rows another run claimed -----------------------------------------------------------------


async def test_a_tampered_plan_never_takes_over_rows_another_run_claimed(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Root b's step 100 was being deleted when that run died, and b was moved away since:
    its rows stay claimed for the run that can reach it. A plan of root a's step 100 is
    tampered to carry, for two of a's files, the ids of two of b's claimed rows (one entry
    otherwise sound, one with a bool for a link count). Neither row is taken over: the
    sound entry is skipped (its file in a kept), the malformed one refused, and both of
    b's rows are left exactly as the dead run left them; a's third file goes."""
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (a, b):
        make_training(r, "t", [100, 200], layers=LAYERS)
        await _scanned(svc_unprotected, r)
    b_rows = _sql(
        db_path,
        "SELECT f.id FROM files f JOIN steps s ON s.id = f.step_id "
        "JOIN trainings t ON t.id = s.training_id JOIN roots r ON r.id = t.root_id "
        "WHERE r.path = ? AND s.relpath = 't/checkpoints/checkpoint_100' ORDER BY f.id",
        (str(b),),
    )
    x, y = int(str(b_rows[0][0])), int(str(b_rows[1][0]))
    _sql(db_path, "UPDATE files SET state = 'deleting' WHERE id IN (?, ?)", (x, y))
    b.rename(tmp_path / "moved")
    rid = (await svc_unprotected.indexed_root(str(a))).id
    plan = await _plan(svc_unprotected, db_path, rid, 100)
    (step,) = plan.steps
    first, second, third = step.files
    files = (replace(first, file_id=x), replace(second, file_id=y, nlink=True), third)
    tampered = Plan(plan.root_id, plan.root, (replace(step, files=files),))
    result = await svc_unprotected.execute(tampered)
    paths = [os.path.join(a, *f.relparts) for f in step.files]
    assert [(r.file_id, r.path, r.outcome, r.error) for r in result.results] == [
        (x, paths[0], Outcome.SKIPPED, SKIPPED_CLAIMED),
        (y, repr(second.relparts), Outcome.FAILED, REFUSED),
        (third.file_id, paths[2], Outcome.DELETED, None),
    ]
    assert [os.path.exists(p) for p in paths] == [True, True, False]
    assert _sql(
        db_path, "SELECT id, state, error, claimed_by FROM files WHERE id IN (?, ?)", (x, y)
    ) == [(x, "deleting", None, None), (y, "deleting", None, None)]


async def test_an_interrupted_run_is_shown_claimed_since_it_claimed(
    tree: tuple[Path, Path],
    svc_unprotected: CheckpointService,
    db_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process dies after its first unlink (os.unlink wrapped to raise after the real
    call): what it left claimed is shown with the time it claimed the rows, each row
    carrying that time and the run."""
    root, _ck = tree
    rid = await _scanned(svc_unprotected, root)
    plan = await _plan(svc_unprotected, db_path, rid, 100)
    real_unlink = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        real_unlink(path, dir_fd=dir_fd)
        raise _Died

    monkeypatch.setattr(os, "unlink", unlink)  # the os module fs calls
    before = time.time()
    with pytest.raises(_Died):
        await svc_unprotected.execute(plan)
    after = time.time()
    monkeypatch.undo()
    left = await svc_unprotected.interrupted()
    assert left is not None and (left.files, left.steps) == (3, 1)
    assert left.since is not None and before <= left.since <= after
    (run_id,) = _sql(db_path, "SELECT id FROM deletion_runs")[0]
    claims = _sql(db_path, "SELECT claimed_at, claimed_by FROM files WHERE state = 'deleting'")
    assert len(claims) == 3 and {by for _, by in claims} == {run_id}
    assert all(before <= float(str(at)) <= after for at, _ in claims)


class _Died(BaseException):
    """The deleting process dying (raised from its unlink: a fault root cannot cause)."""


# the root and the run's history row -------------------------------------------------------


async def test_a_plan_whose_root_is_not_in_this_index_is_refused(
    tree: tuple[Path, Path], tmp_path: Path, db_path: str
) -> None:
    """A plan made with another index, where its root has another id (here: root b's), and
    a plan whose root row was deleted since: each refused with one line, nothing deleted."""
    root, ck = tree
    other = tmp_path / "b"
    make_training(other, "t", [100], layers=LAYERS)
    async with await CheckpointService.open(str(tmp_path / "first.sqlite3")) as first:
        plan = await _plan(first, str(tmp_path / "first.sqlite3"), await _scanned(first, root), 100)
    async with await CheckpointService.open(db_path) as svc:
        await _scanned(svc, other)
        await _scanned(svc, root)
        assert plan.root_id == (await svc.indexed_root(str(other))).id
        with pytest.raises(RootError) as err:
            await svc.execute(plan)
        assert str(err.value) == f"root {root} is not in the index"
        _sql(db_path, "DELETE FROM roots WHERE id = ?", (plan.root_id,))
        with pytest.raises(RootError) as err:
            await svc.execute(plan)
        assert str(err.value) == f"root {root} is not in the index"
    assert len(_files(ck)) == 9 and len(_files(other)) == 3


async def test_a_root_replaced_since_the_scan_is_refused(
    tree: tuple[Path, Path], tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    root, ck = tree
    rid = await _scanned(svc_unprotected, root)
    plan = await _plan(svc_unprotected, db_path, rid, 100)
    root.rename(tmp_path / "moved")
    shutil.copytree(tmp_path / "moved", root)
    with pytest.raises(RootError) as err:
        await svc_unprotected.execute(plan)
    assert str(err.value) == f"root {root} was replaced since it was scanned; scan it again"
    assert len(_files(ck)) == 9
    assert _sql(db_path, "SELECT count(*) FROM deletion_runs") == [(0,)]


@pytest.mark.usefixtures("quick_busy")
async def test_an_index_locked_as_the_run_starts_refuses_it(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Another program holds the index's write lock (a second sqlite3 connection in
    BEGIN IMMEDIATE) when the run would record itself: refused, nothing deleted."""
    root, ck = tree
    rid = await _scanned(svc_unprotected, root)
    plan = await _plan(svc_unprotected, db_path, rid, 100)
    locker = Locker(db_path)
    locker.take()
    try:
        with pytest.raises(IndexBusy) as err:
            await svc_unprotected.execute(plan)
    finally:
        locker.release()
    assert str(err.value) == f"index {db_path} is locked; nothing was deleted"
    assert len(_files(ck)) == 9
    assert _sql(db_path, "SELECT count(*) FROM deletion_runs") == [(0,)]
    assert {v for v in _rows(db_path).values()} == {("active", None)}


async def test_an_index_that_refuses_the_runs_history_row_refuses_the_run(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """The index refuses the run's history row (a trigger, as a database administrator or
    another tool may add one): the run is refused with the database's own reason."""
    root, ck = tree
    rid = await _scanned(svc_unprotected, root)
    plan = await _plan(svc_unprotected, db_path, rid, 100)
    _sql(
        db_path,
        "CREATE TRIGGER no_runs BEFORE INSERT ON deletion_runs "
        "BEGIN SELECT RAISE(ABORT, 'runs are not recorded here'); END",
    )
    with pytest.raises(IndexError_) as err:
        await svc_unprotected.execute(plan)
    assert str(err.value) == (
        f"cannot record the deletion in index {db_path}: runs are not recorded here; "
        "nothing was deleted"
    )
    assert len(_files(ck)) == 9
    assert {v for v in _rows(db_path).values()} == {("active", None)}


# the miStudio intent committed with the claim ---------------------------------------------


async def test_an_interrupted_runs_intent_names_its_database_time_run_files_and_rows(
    tmp_path: Path, mi: MiDB, db: str, writer: tuple[str, str]
) -> None:
    """prune --keep 1 of the studio, interrupted after its unlinks (the role's DELETE right
    revoked meanwhile): the index keeps one intent for the batch, under the run's key,
    naming the miStudio database, when it was committed, the run, and per step its folder,
    its files' absolute paths and its miStudio rows (id, storage path). Read-only commands
    show it: that database, 6 rows of 3 steps, since that time; the run's own outcome names
    the database too."""
    root = await asyncio.to_thread(studio, tmp_path, mi)
    role, url = writer
    before = time.time()
    result = await _interrupted(db, root, mi, role, url)
    after = time.time()
    assert result.mistudio is not None and result.mistudio.database == _display(url)
    ((key, intent),) = _intents(db).items()
    assert key == f"mistudio-pending:{result.run_id}:0"
    at = intent["at"]
    assert isinstance(at, float) and before <= at <= after
    rows = await mi.aexecute(
        "SELECT id, storage_path, step FROM checkpoints WHERE training_id = $1", DONE
    )
    steps = intent["steps"]
    assert isinstance(steps, list)
    assert intent == {"database": _display(url), "at": at, "run": result.run_id, "steps": steps}
    assert [(s["s"], sorted(s["f"]), sorted(s["r"])) for s in steps if isinstance(s, dict)] == [
        (
            str(_step(root, DONE, n)),
            sorted(str(_step(root, DONE, n) / d / "checkpoint.safetensors") for d in layer_dirs()),
            sorted([r["id"], r["storage_path"]] for r in rows if r["step"] == n),
        )
        for n in (1000, 2000, 4000)
    ]
    async with await CheckpointService.open(db) as svc:
        pending = await svc.mistudio_pending()
    assert pending is not None
    assert (pending.database, pending.rows, pending.steps, pending.since) == (
        _display(url),
        6,
        3,
        at,
    )


async def test_a_damaged_intent_is_named_in_a_warning_and_the_intents_after_it_still_repaired(
    tmp_path: Path,
    mi: MiDB,
    db: str,
    writer: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two intents that are no JSON object (text cut short, a list) come before the real
    one in the index: each is named in a warning and left alone, and the real one is still
    repaired (its 6 rows deleted, it dropped). An intent of another miStudio database is
    left for a run against that one."""
    root = await asyncio.to_thread(studio, tmp_path, mi)
    role, url = writer
    await _interrupted(db, root, mi, role, url)
    ((key, intent),) = _intents(db).items()
    _sql(db, "DELETE FROM meta WHERE key = ?", (key,))
    bad = {"mistudio-pending:0:0": '{"database": ', "mistudio-pending:0:1": "[1, 2]"}
    elsewhere = {"database": "ckpt@elsewhere:5432/mistudio", "at": 1.0, "run": 1, "steps": []}
    others = [("mistudio-pending:0:2", json.dumps(elsewhere)), (key, json.dumps(intent))]
    for k, v in [*bad.items(), *others]:  # the real one last
        _sql(db, "INSERT INTO meta (key, value) VALUES (?, ?)", (k, v))
    with caplog.at_level(logging.WARNING, logger=DEL):
        result = await _repair(db, root, url)
    assert result.mistudio is not None and result.mistudio.repaired == 6
    assert await asyncio.to_thread(mi.steps, DONE) == {3000: 2, 5000: 2}
    assert on_disk(root, DONE) == [3000, 5000]
    left = _sql(db, "SELECT key FROM meta WHERE key LIKE 'mistudio-pending:%' ORDER BY key")
    assert [k for (k,) in left] == [*bad, "mistudio-pending:0:2"]
    warned = [r.getMessage() for r in caplog.records if r.name == DEL]
    assert warned == [f"ignoring a malformed miStudio intent {k} in the index" for k in bad] * 2


def test_damaged_intents_alone_are_no_pending_deletion_to_report(
    tree: tuple[Path, Path], db_path: str
) -> None:
    """An index holding only miStudio intents no run can carry out (text cut short, a list,
    an object naming no database): ``ls`` reports no interrupted deletion (it once printed
    "0 miStudio rows of 0 deleted steps in " with no database, on every command, forever)."""
    from click.testing import CliRunner

    from ckpt_tui.cli import main

    root, _ck = tree

    def ls() -> tuple[int, str]:
        res = CliRunner().invoke(main, ["ls", str(root), "--db", db_path], catch_exceptions=False)
        return res.exit_code, res.stderr

    assert ls() == (0, "")
    for i, value in enumerate(['{"database": ', "[1, 2]", '{"at": 1.0, "steps": []}']):
        _sql(
            db_path,
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            (f"mistudio-pending:0:{i}", value),
        )
    assert ls() == (0, "")
    good = {"database": "ckpt@db:5432/mistudio", "at": 1.0, "run": 1, "steps": [{"r": [[1, "p"]]}]}
    _sql(
        db_path,
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        ("mistudio-pending:0:9", json.dumps(good)),
    )
    code, err = ls()
    assert code == 0
    assert "left 1 miStudio rows of 1 deleted steps in ckpt@db:5432/mistudio" in err

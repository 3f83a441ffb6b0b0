"""What a deletion run reports and records, pinned where mutating ``Deleter.execute`` and
``Deleter._run_batch`` went unnoticed (issue 14): the progress a caller is shown while a
batch is still being deleted, the step each refused or skipped file belongs to, a run
stopped by its filesystem or by its root being replaced, a run cancelled before it began,
files found across batches, interrupted runs recorded each in its own history, the time a
run took, and a run that failed midway recorded as failed.

Real safetensors files in ``tmp_path``, a real SQLite index read back with ``sqlite3``, the
real service; the oracles are the disk, the index and the history, never the plan.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from ckpt_tui import deletion, history
from ckpt_tui.protection import Protection
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import DeleteProgress, ExecuteResult, MiStudioOutcome, Outcome, Plan
from tests.conftest import make_training
from tests.test_mistudio import MiDB, db, layer_dirs, mi, on_disk, studio, trainings_root
from tests.test_promises_deletion_mut import (
    LAYERS,
    _files,
    _plan_first_step,
    _rows,
    _step_id,
    _step_rows,
    hold_open,
    tree,
)
from tests.test_promises_planning_mut import _scanned, _sql

__all__ = ["db", "hold_open", "mi", "tree"]  # fixtures shared with the planning and miStudio tests

DEL = "ckpt_tui.deletion"


def _planned(plan: Plan) -> list[tuple[int, int, str]]:
    """(file id, step id, absolute path) of every planned file, in plan order."""
    return [
        (f.file_id, s.step_id, os.path.join(plan.root, *f.relparts))
        for s in plan.steps
        for f in s.files
    ]


# progress while a batch is being deleted --------------------------------------------------


class _Lockstep(threading.Event):
    """A cancel flag never set, whose check by the deleting thread (made before each file and
    after each step) first waits, at most 10 s, until the caller has been shown the progress
    of every planned file already gone from disk: what a person watching a long batch sees
    (the bar moving while the unlinks go on), made deterministic. Checks on the loop's own
    thread pass straight through."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self.loop_thread = threading.current_thread()
        self.paths = paths
        self.cond = threading.Condition()
        self.shown: list[DeleteProgress] = []
        self.checks: list[tuple[int, int]] = []  # (files gone, files shown) per check
        self.late = False

    def progress(self, p: DeleteProgress) -> None:
        with self.cond:
            self.shown.append(p)
            self.cond.notify_all()

    def _files_shown(self) -> int:
        return sum(p.item is not None for p in self.shown)

    def is_set(self) -> bool:
        if threading.current_thread() is not self.loop_thread:
            gone = sum(not os.path.exists(p) for p in self.paths)
            with self.cond:
                if not self.late and not self.cond.wait_for(
                    lambda: self._files_shown() >= gone, timeout=10
                ):
                    self.late = True  # waited once in vain: never again
                self.checks.append((gone, self._files_shown()))
        return super().is_set()


async def test_each_file_is_shown_while_the_rest_of_its_batch_is_still_being_deleted(
    tree: tuple[Path, Path],
    svc_unprotected: CheckpointService,
    db_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With progress handed over after every file (FLUSH_SECONDS 0, as a batch slower than
    the flush interval hands it over), the caller is shown each file before the deleting
    thread goes on to the next one, in order, with the running totals; then the folders."""
    monkeypatch.setattr(deletion, "FLUSH_SECONDS", 0.0)
    root, ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    planned = _planned(plan)
    sizes = [os.stat(p).st_size for _f, _s, p in planned]
    watch = _Lockstep([p for _f, _s, p in planned])
    result = await svc_unprotected.execute(plan, watch.progress, watch)
    assert result.ok
    assert watch.checks == [(0, 0), (1, 1), (2, 2), (3, 3)]
    files = [p for p in watch.shown if p.item is not None]
    assert [(p.item.path, p.item.outcome) for p in files if p.item is not None] == [
        (path, Outcome.DELETED) for _f, _s, path in planned
    ]
    assert [(p.files_done, p.bytes_freed) for p in files] == [
        (1, sizes[0]),
        (2, sizes[0] + sizes[1]),
        (3, sum(sizes)),
    ]
    (dirs,) = [p for p in watch.shown if p.item is None]
    assert watch.shown[-1] is dirs and str(ck / "checkpoint_100") in dirs.removed_dirs
    assert _files(ck / "checkpoint_100") == []


# what each file's result and each step's history say ---------------------------------------


async def test_a_file_already_gone_is_not_counted_as_deleted_by_this_run(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """A planned file removed by hand before the run: reported already gone, and the step's
    history counts only the two files this run unlinked, with their bytes."""
    root, _ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    (gone_id, sid, gone), *rest = _planned(plan)
    sizes = sum(os.stat(p).st_size for _f, _s, p in rest)
    os.unlink(gone)
    result = await svc_unprotected.execute(plan)
    assert [(r.file_id, r.step_id, r.outcome) for r in result.already_gone] == [
        (gone_id, sid, Outcome.ALREADY_GONE)
    ]
    assert result.freed_bytes == sizes and len(result.deleted) == 2
    (run,) = await svc_unprotected.history(str(root))
    assert [
        (s.path, s.files_planned, s.files_deleted, s.freed_bytes, s.result) for s in run.steps
    ] == [("t/checkpoints/checkpoint_100", 3, 2, sizes, "deleted")]
    assert (run.outcome, run.freed_files, run.freed_bytes) == ("finished", 2, sizes)


async def test_refused_forgotten_and_open_files_each_name_their_own_step(
    tree: tuple[Path, Path],
    svc_unprotected: CheckpointService,
    db_path: str,
    hold_open: Callable[[Path], int],
) -> None:
    """One step: an entry tampered out of the root (refused), a row forgotten since the plan
    (skipped), a file open in another process (the deleter's own default keeps it). Each
    result carries its file and step; the step's history lists the two failures."""
    root, ck = tree
    rid = await _scanned(svc_unprotected, root)
    sid = _step_id(db_path, "t/checkpoints/checkpoint_100")
    step_dir = ck / "checkpoint_100"
    busy = step_dir / "layer_2" / "checkpoint.safetensors"
    pid = hold_open(busy)
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    plan = await svc_unprotected.plan_steps(rid, [sid], include_open=True)
    (step,) = plan.steps
    first, second, third = step.files
    assert [f.relparts[-2] for f in step.files] == list(LAYERS)
    tampered = Plan(
        plan.root_id,
        plan.root,
        (replace(step, files=(replace(first, relparts=("..", "x.safetensors")), second, third)),),
    )
    _sql(db_path, "DELETE FROM files WHERE id = ?", (second.file_id,))
    result = await svc_unprotected.deleter.execute(tampered)
    assert [(r.file_id, r.step_id, r.path, r.outcome, r.error) for r in result.results] == [
        (first.file_id, sid, repr(("..", "x.safetensors")), Outcome.FAILED, deletion.REFUSED),
        (
            second.file_id,
            sid,
            str(step_dir / "layer_1" / "checkpoint.safetensors"),
            Outcome.SKIPPED,
            "no longer in the index, or claimed by another deleter",
        ),
        (third.file_id, sid, str(busy), Outcome.FAILED, f"open in process {pid} ({comm})"),
    ]
    assert len(_files(step_dir)) == 3
    (run,) = await svc_unprotected.history(str(root))
    (rec,) = run.steps
    assert (rec.path, rec.files_planned, rec.files_deleted, rec.result) == (
        "t/checkpoints/checkpoint_100",
        3,
        0,
        "partly deleted",
    )
    assert list(rec.errors) == [
        {"path": repr(("..", "x.safetensors")), "error": deletion.REFUSED},
        {
            "path": "t/checkpoints/checkpoint_100/layer_2/checkpoint.safetensors",
            "error": f"open in process {pid} ({comm})",
        },
    ]


async def test_a_removed_step_loses_its_row_though_a_folder_of_its_name_came_back(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """The step folder this run removed is made again (empty: a trainer starting over) the
    moment the caller is shown it went, before the index is updated: the row of the step
    that went is dropped (the new folder is the next scan's), its training stays."""
    root, ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    sid = _step_id(db_path, "t/checkpoints/checkpoint_100")
    step_dir = ck / "checkpoint_100"

    def again(p: DeleteProgress) -> None:
        if sid in p.removed_step_ids:
            step_dir.mkdir()

    result = await svc_unprotected.execute(plan, again)
    assert result.ok and result.removed_step_ids == (sid,)
    assert step_dir.is_dir() and list(step_dir.iterdir()) == []
    assert _step_rows(db_path) == {"t/checkpoints/checkpoint_200", "t/checkpoints/checkpoint_300"}
    assert result.appeared == ()


# a run stopped midway ---------------------------------------------------------------------


async def test_a_filesystem_gone_read_only_stops_the_run_and_keeps_the_training_folders(
    tree: tuple[Path, Path],
    svc_unprotected: CheckpointService,
    db_path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A whole training planned; its filesystem turns read-only at the first unlink (EROFS,
    raised by os.unlink: a fault the test cannot cause for real). The run stops with one
    line, logged as an error; every file is skipped with that line, nothing is removed,
    not even the folders above the steps, and the history says stopped."""
    root, ck = tree
    rid = await _scanned(svc_unprotected, root)
    plan = await svc_unprotected.plan_targets(rid, [str(root / "t")])
    assert plan.training_dirs
    first = _planned(plan)[0][2]

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "unlink", unlink)  # the os module fs calls
    with caplog.at_level(logging.ERROR, logger=DEL):
        result = await svc_unprotected.execute(plan)
    monkeypatch.undo()
    why = (
        f"stopped: {first}: {os.strerror(errno.EROFS)}; nothing after it was touched, "
        "run again to resume"
    )
    assert result.stopped == why and not result.cancelled
    assert {(r.outcome, r.error) for r in result.results} == {(Outcome.SKIPPED, why)}
    assert len(result.results) == 9 and result.removed_dirs == ()
    assert len(_files(ck)) == 9 and (root / "t").is_dir()
    errors = [r.getMessage() for r in caplog.records if r.name == DEL and r.levelname == "ERROR"]
    assert errors == [f"deletion {why}"]
    (run,) = await svc_unprotected.history(str(root))
    assert run.outcome == "stopped"
    assert {v[0] for v in _rows(db_path).values()} == {"active"}


class _Swap(threading.Event):
    """A cancel flag never set whose first check, made by the run just before its first
    batch, moves the root away and puts an empty folder of the same name in its place (a
    mount replaced at that moment)."""

    def __init__(self, root: Path, moved: Path) -> None:
        super().__init__()
        self.root, self.moved, self.done = root, moved, False

    def is_set(self) -> bool:
        if not self.done:
            self.done = True
            self.root.rename(self.moved)
            self.root.mkdir()
        return super().is_set()


async def test_a_root_replaced_as_the_run_starts_stops_it_and_nothing_is_deleted(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str, tmp_path: Path
) -> None:
    root, _ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    moved = tmp_path / "moved"
    result = await svc_unprotected.execute(plan, None, _Swap(root, moved))
    why = f"root {root} was replaced since it was indexed"
    assert result.stopped == why and not result.cancelled
    assert [(r.file_id, r.step_id, r.path, r.outcome, r.error) for r in result.results] == [
        (fid, sid, path, Outcome.SKIPPED, why) for fid, sid, path in _planned(plan)
    ]
    assert len(_files(moved / "t" / "checkpoints")) == 9
    assert {v for v in _rows(db_path).values()} == {("active", None)}
    (run,) = await svc_unprotected.history(str(root))
    assert run.outcome == "stopped"


async def test_a_run_cancelled_before_it_began_skips_every_file_and_says_cancelled(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    root, ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    cancel = threading.Event()
    cancel.set()
    result = await svc_unprotected.execute(plan, None, cancel)
    assert result.cancelled and result.stopped is None and not result.ok
    assert [(r.file_id, r.step_id, r.path, r.outcome, r.error) for r in result.results] == [
        (fid, sid, path, Outcome.SKIPPED, "cancelled") for fid, sid, path in _planned(plan)
    ]
    assert len(_files(ck)) == 9
    (run,) = await svc_unprotected.history(str(root))
    assert (run.outcome, run.freed_files) == ("cancelled", 0)


# across batches ----------------------------------------------------------------------------


async def test_files_that_appeared_are_reported_from_every_batch(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """66 one-file steps: claimed as a batch of 64, then one of 2. A file appeared since the
    scan in a step of each batch: both are reported, each step folder and row kept."""
    root = tmp_path / "root"
    ck = make_training(root, "t", range(1, 68), layers=["layer_0"])
    rid = await _scanned(svc_unprotected, root)
    plan = await svc_unprotected.plan_retention(rid, 1, force=True)
    assert plan.file_count == 66
    late = [ck / f"checkpoint_{n}" / "layer_0" / "late.safetensors" for n in (1, 66)]
    for p in late:
        p.write_bytes(b"written after the scan")
    result = await svc_unprotected.execute(plan)
    assert result.appeared == tuple(str(p) for p in late)
    assert len(result.deleted) == 66 and result.stopped is None
    assert all(p.is_file() for p in late)
    assert _step_rows(db_path) == {f"t/checkpoints/checkpoint_{n}" for n in (1, 66, 67)}


async def test_interrupted_runs_finished_together_each_get_their_own_steps(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Two runs that died with claimed rows (their run rows written by history.start, as
    the dead processes did; the claims by sqlite3): finishing them records each step in the
    run that claimed it, and marks both interrupted."""
    root, ck = tree
    rid = await _scanned(svc_unprotected, root)
    runs = []
    for n in (100, 200):
        sid = _step_id(db_path, f"t/checkpoints/checkpoint_{n}")
        plan = await svc_unprotected.plan_steps(rid, [sid])
        run_id = await history.start(svc_unprotected.db, plan, history.RunContext())
        _sql(
            db_path,
            "UPDATE files SET state = 'deleting', claimed_by = ? WHERE step_id = ?",
            (run_id, sid),
        )
        runs.append(run_id)
    assert await svc_unprotected.finish_interrupted() == 6
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint_300"]
    records = {r.id: r for r in await svc_unprotected.history(str(root))}
    assert sorted(records) == sorted(runs)
    for run_id, n in zip(runs, (100, 200), strict=True):
        rec = records[run_id]
        assert rec.outcome == "interrupted"
        assert [(s.path, s.files_planned, s.files_deleted, s.result) for s in rec.steps] == [
            (f"t/checkpoints/checkpoint_{n}", 3, 3, "deleted")
        ]


# what the run took, and a run that failed ----------------------------------------------------


async def test_a_run_reports_the_time_it_took(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    root, _ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    t0 = time.perf_counter()
    result = await svc_unprotected.execute(plan)
    took = time.perf_counter() - t0
    assert result.ok and 0 < result.seconds <= took


async def test_an_empty_plan_leaves_a_mistudio_intent_to_a_run_that_opens_mistudio(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """An interrupted --mistudio run left its intent in the index; an empty plan without
    miStudio open has nothing to do: an empty result, no run recorded, the intent kept."""
    root, _ck = tree
    rid = await _scanned(svc_unprotected, root)
    doc = '{"database": "postgres@db:5432/mistudio", "at": 1.0, "run": 1, "steps": []}'
    _sql(db_path, "INSERT INTO meta (key, value) VALUES ('mistudio-pending:1:0', ?)", (doc,))
    result = await svc_unprotected.execute(await svc_unprotected.plan_steps(rid, []))
    assert result == ExecuteResult((), (), (), 0, seconds=0.0)
    assert _sql(db_path, "SELECT count(*) FROM deletion_runs") == [(0,)]
    assert _sql(db_path, "SELECT key, value FROM meta WHERE key LIKE 'mistudio-pending:%'") == [
        ("mistudio-pending:1:0", doc)
    ]


async def test_a_run_that_fails_midway_is_recorded_as_failed(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """A whole training: the caller's progress callback raises when shown the training's
    own folders go (the last thing a run does): the error reaches the caller and the
    history records the run as failed, finished."""
    root, _ck = tree
    rid = await _scanned(svc_unprotected, root)
    plan = await svc_unprotected.plan_targets(rid, [str(root / "t")])

    class Boom(Exception):
        pass

    def progress(p: DeleteProgress) -> None:
        if str(root / "t") in p.removed_dirs:
            raise Boom

    t0 = time.time()
    with pytest.raises(Boom):
        await svc_unprotected.execute(plan, progress)
    assert not (root / "t").exists()
    (run,) = await svc_unprotected.history(str(root))
    assert run.outcome == "failed"
    assert run.finished_at is not None and t0 <= run.finished_at <= time.time()


# with miStudio (PostgreSQL: CKPT_TUI_TEST_PG_URL) --------------------------------------------

BIG = "train_0b16b16b"  # a completed miStudio training of 34 steps, best (and newest) 34
BIG_LOSSES = {n: 1.0 / n for n in range(1, 35)}
Z_PLAIN = "z_plain"  # a training miStudio never recorded, planned after BIG


def _big_studio(tmp_path: Path, mi: MiDB) -> Path:
    """``prune --keep 1`` plans BIG's steps 1-33, 66 files: a batch of 64, then one of 2."""
    root = trainings_root(tmp_path)
    make_training(root, BIG, BIG_LOSSES, layer_dirs())
    mi.add_training(BIG, "completed", BIG_LOSSES)
    return root


async def _open_mi(db: str, url: str) -> CheckpointService:
    return await CheckpointService.open(db, protection=Protection(recent_seconds=0), mistudio=url)


def _display(url: str) -> str:
    return url.split("://", 1)[1]


def _intents(db: str) -> dict[str, dict[str, object]]:
    rows = _sql(db, "SELECT key, value FROM meta WHERE key LIKE 'mistudio-pending:%'")
    return {str(k): json.loads(str(v)) for k, v in rows}


async def test_an_empty_plan_with_mistudio_open_records_nothing_and_reports_mistudio_untouched(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    """Nothing planned, nothing interrupted; the only intent in the index is another
    miStudio database's: an empty result whose miStudio part names the database with
    nothing done, no run recorded, that intent kept."""
    root = await asyncio.to_thread(studio, tmp_path, mi)
    doc = json.dumps({"database": "postgres@elsewhere:5432/mi", "at": 1.0, "run": 1, "steps": []})
    async with await _open_mi(db, mi.url) as svc:
        rid = (await svc.indexed_root(str(root))).id
        _sql(db, "INSERT INTO meta (key, value) VALUES ('mistudio-pending:1:0', ?)", (doc,))
        result = await svc.execute(await svc.plan_steps(rid, []))
    assert result == ExecuteResult(
        (), (), (), 0, seconds=0.0, mistudio=MiStudioOutcome(_display(mi.url))
    )
    assert _sql(db, "SELECT count(*) FROM deletion_runs") == [(0,)]
    assert list(_intents(db)) == ["mistudio-pending:1:0"]


async def test_each_batch_commits_its_intent_with_the_run_the_batch_and_the_paths(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    """Two batches of BIG's steps: while each is being deleted the index holds its intent,
    keyed by the run and the batch, naming the database, the run, and per step its folder,
    its files' absolute paths and its rows (id, storage path); dropped once the rows went.
    Every file of both batches is reported deleted."""
    root = await asyncio.to_thread(_big_studio, tmp_path, mi)
    rows = await mi.aexecute(
        "SELECT id, storage_path, step FROM checkpoints WHERE training_id = $1", BIG
    )
    by_step: dict[int, list[list[str]]] = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append([r["id"], r["storage_path"]])
    seen: dict[str, dict[str, object]] = {}

    def progress(_p: DeleteProgress) -> None:
        seen.update(_intents(db))

    async with await _open_mi(db, mi.url) as svc:
        plan = await svc.plan_retention((await svc.indexed_root(str(root))).id, 1)
        assert [s.step for s in plan.steps] == list(range(1, 34))
        result = await svc.execute(plan, progress)
    assert result.ok and len(result.deleted) == 66 and result.run_id is not None
    assert [r.path for r in result.results] == [p for _f, _s, p in _planned(plan)]
    run = result.run_id
    assert sorted(seen) == [f"mistudio-pending:{run}:0", f"mistudio-pending:{run}:1"]
    for n, steps in ((0, range(1, 33)), (1, [33])):
        doc = seen[f"mistudio-pending:{run}:{n}"]
        assert (doc["database"], doc["run"]) == (_display(mi.url), run)
        assert isinstance(doc["at"], float)
        step_docs = doc["steps"]
        assert isinstance(step_docs, list)
        expect = {s.path: s for s in plan.steps if s.step in steps}
        assert [d["s"] for d in step_docs] == list(expect)
        for d in step_docs:
            s = expect[d["s"]]
            assert d["f"] == [os.path.join(str(root), *f.relparts) for f in s.files]
            assert sorted(d["r"]) == sorted(by_step[s.step])
    assert _intents(db) == {}
    assert await asyncio.to_thread(mi.steps, BIG) == {34: 2}


async def test_a_batch_all_of_whose_steps_became_active_is_skipped_and_the_next_still_runs(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    """BIG goes running after the plan: its 64 files of the first batch and 2 of the second
    are each reported kept with the reason, and the training miStudio never recorded, in
    the second batch, is still deleted."""
    root = await asyncio.to_thread(_big_studio, tmp_path, mi)
    make_training(root, Z_PLAIN, [1, 2], layer_dirs())
    async with await _open_mi(db, mi.url) as svc:
        plan = await svc.plan_retention((await svc.indexed_root(str(root))).id, 1)
        assert [(Path(s.path).parts[-3], s.step) for s in plan.steps][-2:] == [
            (BIG, 33),
            (Z_PLAIN, 1),
        ]
        await mi.aexecute("UPDATE trainings SET status = 'running' WHERE id = $1", BIG)
        result = await svc.execute(plan)
    why = "active training: running (since the plan was made); not deleted"
    planned = _planned(plan)
    assert [(r.file_id, r.step_id, r.path, r.outcome, r.error) for r in result.results] == [
        (fid, sid, path, Outcome.SKIPPED, why) for fid, sid, path in planned[:66]
    ] + [(fid, sid, path, Outcome.DELETED, None) for fid, sid, path in planned[66:]]
    assert result.stopped is None and not result.cancelled
    assert on_disk(root, BIG) == list(range(1, 35)) and on_disk(root, Z_PLAIN) == [2]
    assert await asyncio.to_thread(mi.steps, BIG) == {n: 2 for n in BIG_LOSSES}


async def test_mistudio_failing_between_batches_stops_the_run_before_the_next_batch(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    """While the first batch is being deleted, miStudio's trainings table is renamed (a
    migration): the first batch goes with its rows; the check before the second fails, so
    its files are each kept with the reason, the run says why and that nothing after was
    touched, and the miStudio outcome carries the error."""
    root = await asyncio.to_thread(_big_studio, tmp_path, mi)
    renamed: list[bool] = []

    def rename(_p: DeleteProgress) -> None:
        if not renamed:  # blocking the loop: the unlinks go on in their thread meanwhile
            t = threading.Thread(
                target=mi.script, args=("ALTER TABLE trainings RENAME TO trainings_old",)
            )
            t.start()
            t.join()
            renamed.append(True)

    async with await _open_mi(db, mi.url) as svc:
        plan = await svc.plan_retention((await svc.indexed_root(str(root))).id, 1)
        result = await svc.execute(plan, rename)
    assert result.mistudio is not None and result.mistudio.error is not None
    error = result.mistudio.error
    assert error.startswith(
        f"miStudio database {_display(mi.url)} does not have miStudio's schema: "
    )
    assert "trainings" in error
    why = f"{error}; nothing after it was touched, run again"
    assert result.stopped == why and not result.cancelled
    planned = _planned(plan)
    assert [(r.file_id, r.step_id, r.path, r.outcome, r.error) for r in result.results] == [
        (fid, sid, path, Outcome.DELETED, None) for fid, sid, path in planned[:64]
    ] + [(fid, sid, path, Outcome.SKIPPED, why) for fid, sid, path in planned[64:]]
    assert result.mistudio.rows_deleted == 64
    assert on_disk(root, BIG) == [33, 34]
    assert await asyncio.to_thread(mi.steps, BIG) == {33: 2, 34: 2}

"""What a deletion run does and reports, pinned where mutating ``ckpt_tui/deletion.py`` went
unnoticed (issue 14, mutation/report.md): bytes freed against the filesystem's own
``st_size`` / ``st_blocks``, the folders and index rows that go, a lock held by another
deleter, rows forgotten or damaged since the plan, open files, interrupted deletions.

Real safetensors files in ``tmp_path``, a real SQLite index, the real service; the oracles
are the disk and the index read with ``sqlite3``, never the plan that was carried out.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from ckpt_tui import fs
from ckpt_tui.deletion import REFUSED
from ckpt_tui.errors import IndexBusy
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import DeleteProgress, Outcome, Plan
from tests.conftest import make_training
from tests.test_promises_planning_mut import _scanned, _sql, hold_open

__all__ = ["hold_open"]  # the fixture, shared with the planning promises

LAYERS = ("layer_0", "layer_1", "layer_2")


def _rows(db: str) -> dict[str, tuple[object, object]]:
    """'step relpath/file relpath' -> (state, error), read with sqlite3."""
    rows = _sql(
        db,
        "SELECT s.relpath, f.relpath, f.state, f.error FROM files f "
        "JOIN steps s ON s.id = f.step_id",
    )
    return {f"{s}/{f}": (state, err) for s, f, state, err in rows}


def _step_rows(db: str) -> set[str]:
    return {str(r[0]) for r in _sql(db, "SELECT relpath FROM steps")}


def _step_id(db: str, rel: str) -> int:
    return int(str(_sql(db, "SELECT id FROM steps WHERE relpath = ?", (rel,))[0][0]))


async def _plan_first_step(svc: CheckpointService, root: Path, db: str) -> Plan:
    """Scan ``root`` and plan its step 100 (protections lifted by the service)."""
    rid = await _scanned(svc, root)
    return await svc.plan_steps(rid, [_step_id(db, "t/checkpoints/checkpoint_100")])


def _usage(paths: list[Path]) -> tuple[int, int]:
    """(st_size, st_blocks * 512) summed over ``paths``, as the filesystem says."""
    stats = [os.stat(p) for p in paths]
    return sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats)


def _files(step: Path) -> list[Path]:
    return sorted(step.rglob("*.safetensors"))


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    make_training(root, "t", [100, 200, 300], layers=LAYERS)
    return root, root / "t" / "checkpoints"


async def test_a_run_frees_what_the_filesystem_held_and_reports_each_file_and_folder(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Two whole steps: every file deleted with its own st_size and blocks freed, the step
    and layer folders removed and reported (progress too), their step rows dropped, the
    training and its last step left."""
    root, ck = tree
    rid = await _scanned(svc_unprotected, root)
    gone = _files(ck / "checkpoint_100") + _files(ck / "checkpoint_200")
    per_file = {str(p): _usage([p]) for p in gone}
    size, blocks = _usage(gone)
    sids = [_step_id(db_path, f"t/checkpoints/checkpoint_{n}") for n in (100, 200)]
    plan = await svc_unprotected.plan_steps(rid, sids)
    events: list[DeleteProgress] = []
    result = await svc_unprotected.execute(plan, events.append)
    assert {r.path: (r.outcome, r.freed_bytes, r.freed_disk_bytes) for r in result.results} == {
        p: (Outcome.DELETED, s, b) for p, (s, b) in per_file.items()
    }
    assert (result.freed_bytes, result.freed_disk_bytes) == (size, blocks)
    assert result.ok and not result.cancelled and result.stopped is None
    assert result.recovered == 0 and result.appeared == () and result.run_id is not None
    steps = {str(ck / f"checkpoint_{n}") for n in (100, 200)}
    layers = {f"{s}/{layer}" for s in steps for layer in LAYERS}
    assert set(result.removed_dirs) == steps | layers
    assert sorted(result.removed_step_ids) == sorted(sids)
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint_300"]
    assert events[-1].files_done == events[-1].files_total == 6
    assert (events[-1].bytes_freed, events[-1].bytes_total) == (size, size)
    assert {d for e in events for d in e.removed_dirs} == steps | layers
    assert sorted(i for e in events for i in e.removed_step_ids) == sorted(sids)
    assert [e.item.path for e in events if e.item is not None] == [r.path for r in result.results]
    assert _step_rows(db_path) == {"t/checkpoints/checkpoint_300"}
    assert {k for k in _rows(db_path)} == {
        f"t/checkpoints/checkpoint_300/{layer}/checkpoint.safetensors" for layer in LAYERS
    }


async def test_a_training_deleted_whole_loses_its_folders_and_its_index_rows(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    root, ck = tree
    make_training(root, "u", [100], layers=LAYERS)
    rid = await _scanned(svc_unprotected, root)
    plan = await svc_unprotected.plan_targets(rid, [str(root / "t")])
    size = _usage(_files(ck))[0]
    events: list[DeleteProgress] = []
    result = await svc_unprotected.execute(plan, events.append)
    assert result.ok
    steps = [str(ck / f"checkpoint_{n}") for n in (100, 200, 300)]
    inside = {f"{s}/{layer}" for s in steps for layer in LAYERS} | set(steps)
    assert set(result.removed_dirs) == inside | {str(ck), str(root / "t")}
    last = events[-1]  # the folders above the steps go last, once every file went
    assert (last.item, last.removed_dirs, last.removed_step_ids) == (
        None,
        (str(ck), str(root / "t")),
        (),
    )
    assert (last.files_done, last.files_total, last.bytes_freed, last.bytes_total) == (
        9,
        9,
        size,
        size,
    )
    assert sorted(p.name for p in root.iterdir()) == ["u"]
    assert [r[0] for r in _sql(db_path, "SELECT name FROM trainings")] == ["u"]
    assert _step_rows(db_path) == {"u/checkpoints/checkpoint_100"}


async def test_another_deleter_holding_the_lock_refuses_the_run_and_nothing_goes(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """The lock file is held (flock, as another ckpt-tui deleting through this index holds
    it): the run is refused with one line and no file or row is touched."""
    root, ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    before = _rows(db_path)
    lock = svc_unprotected.db.lock_path
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(IndexBusy) as err:
            await svc_unprotected.execute(plan)
        assert str(err.value) == (
            f"index {svc_unprotected.db.display} is busy: another ckpt-tui is deleting; "
            "try again when it finishes"
        )
        # an interrupted deletion is left to the holder, or refused when asked for now
        _sql(db_path, "UPDATE files SET state = 'deleting' WHERE relpath LIKE 'layer_0/%'")
        assert await svc_unprotected.deleter.recover() == 0
        with pytest.raises(IndexBusy):
            await svc_unprotected.finish_interrupted()
        _sql(db_path, "UPDATE files SET state = 'active'")
    finally:
        os.close(fd)
    assert _rows(db_path) == before
    assert len(_files(ck)) == 9
    result = await svc_unprotected.execute(plan)  # the lock released: it goes
    assert result.ok and not (ck / "checkpoint_100").exists()


async def test_a_row_forgotten_since_the_plan_is_skipped_and_its_file_kept(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    root, ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    step = ck / "checkpoint_100"
    kept = step / "layer_1" / "checkpoint.safetensors"
    (step / "samples").mkdir()  # empty before the run: only a step that goes whole loses it
    _sql(
        db_path,
        "DELETE FROM files WHERE relpath = 'layer_1/checkpoint.safetensors' AND "
        "step_id = (SELECT id FROM steps WHERE relpath = 't/checkpoints/checkpoint_100')",
    )
    result = await svc_unprotected.execute(plan)
    by_path = {r.path: (r.outcome, r.error) for r in result.results}
    assert by_path.pop(str(kept)) == (
        Outcome.SKIPPED,
        "no longer in the index, or claimed by another deleter",
    )
    assert set(by_path.values()) == {(Outcome.DELETED, None)}
    assert kept.is_file()
    assert sorted(p.name for p in step.iterdir()) == ["layer_1", "samples"]  # not whole
    assert result.removed_step_ids == ()


async def test_a_plan_entry_that_is_not_a_safe_path_is_refused_and_its_row_kept(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str, tmp_path: Path
) -> None:
    """A plan whose entries were tampered with (a path out of the root, a bool for a link
    count) never acts on them: each is FAILED with the refusal, its row back to active with
    the error, the file outside untouched; the sound entries still go."""
    root, _ck = tree
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"not yours")
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    (step,) = plan.steps
    first, second, third = step.files
    bad = (
        replace(first, relparts=("..", "victim.safetensors")),
        replace(second, nlink=True),
        third,
    )
    tampered = Plan(plan.root_id, plan.root, (replace(step, files=bad),))
    result = await svc_unprotected.execute(tampered)
    assert [(r.path, r.outcome, r.error) for r in result.results[:2]] == [
        (repr(("..", "victim.safetensors")), Outcome.FAILED, REFUSED),
        (repr(second.relparts), Outcome.FAILED, REFUSED),
    ]
    assert [r.outcome for r in result.results[2:]] == [Outcome.DELETED]
    for parts in ((), list(third.relparts), (*third.relparts[:-1], 7)):
        odd = Plan(
            plan.root_id, plan.root, (replace(step, files=(replace(third, relparts=parts),)),)
        )
        (item,) = (await svc_unprotected.execute(odd)).results  # type: ignore[arg-type]
        assert (item.path, item.outcome, item.error) == (repr(parts), Outcome.FAILED, REFUSED)
    assert victim.read_bytes() == b"not yours"
    rows = _rows(db_path)
    for f in (first, second):
        assert rows["t/checkpoints/checkpoint_100/" + "/".join(f.relparts[3:])] == (
            "active",
            REFUSED,
        )
    assert not os.path.exists(os.path.join(root, *third.relparts))


async def test_a_file_open_in_another_process_is_left_unless_allowed(
    tree: tuple[Path, Path],
    svc_unprotected: CheckpointService,
    db_path: str,
    hold_open: Callable[[Path], int],
) -> None:
    root, ck = tree
    rid = await _scanned(svc_unprotected, root)
    busy = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    pid = hold_open(busy)
    sid = _step_id(db_path, "t/checkpoints/checkpoint_100")
    plan = await svc_unprotected.plan_steps(rid, [sid], include_open=True)
    assert len(plan.files) == 3
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    result = await svc_unprotected.execute(plan)
    assert [(r.path, r.outcome, r.error) for r in result.failed] == [
        (str(busy), Outcome.FAILED, f"open in process {pid} ({comm})")
    ]
    assert busy.is_file() and len(result.deleted) == 2
    key = "t/checkpoints/checkpoint_100/layer_0/checkpoint.safetensors"
    assert _rows(db_path)[key] == ("active", f"open in process {pid} ({comm})")
    again = await svc_unprotected.plan_steps(rid, [sid], include_open=True)
    done = await svc_unprotected.execute(again, allow_open=True)
    assert [r.path for r in done.deleted] == [str(busy)] and not busy.exists()


async def test_an_interrupted_deletion_is_finished_and_its_unsafe_rows_refused(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Rows an interrupted run claimed (state 'deleting') are finished by the next deleter:
    their files go (counted as recovered), a claimed row whose path is not safe is put back
    with the refusal and its file kept."""
    root, ck = tree
    rid = await _scanned(svc_unprotected, root)
    step = ck / "checkpoint_100"
    _sql(
        db_path,
        "UPDATE files SET state = 'deleting' WHERE step_id = ?",
        (_step_id(db_path, "t/checkpoints/checkpoint_100"),),
    )
    _sql(
        db_path,
        "UPDATE files SET relpath = '../layer_2/checkpoint.safetensors' WHERE "
        "relpath = 'layer_2/checkpoint.safetensors' AND state = 'deleting'",
    )
    plan = await svc_unprotected.plan_steps(rid, [])
    result = await svc_unprotected.execute(plan)
    assert result.recovered == 2
    assert [p.name for p in step.iterdir()] == ["layer_2"]
    assert (step / "layer_2" / "checkpoint.safetensors").is_file()
    rows = _rows(db_path)
    assert rows["t/checkpoints/checkpoint_100/../layer_2/checkpoint.safetensors"] == (
        "active",
        REFUSED,
    )
    assert [k for k in rows if k.startswith("t/checkpoints/checkpoint_100/layer")] == []
    assert await svc_unprotected.interrupted() is None


async def test_files_that_appeared_in_a_whole_step_are_reported_and_keep_the_step_row(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    root, ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    step = ck / "checkpoint_100"
    late = step / "layer_1" / "late.safetensors"
    late.write_bytes(b"written after the scan")
    result = await svc_unprotected.execute(plan)
    assert result.appeared == (str(late),)
    assert late.is_file() and result.removed_step_ids == ()
    assert "t/checkpoints/checkpoint_100" in _step_rows(db_path)


async def test_claims_grow_from_64_files_so_an_interrupted_run_leaves_few_rows(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Whole steps are claimed (committed as 'deleting') in batches of 64 files, then 128,
    doubling: while each batch is unlinked the index holds exactly that many claimed rows
    (what a crash would leave to finish), seen from the progress callback with sqlite3."""
    root = tmp_path / "root"
    make_training(root, "t", range(1, 301), layers=["layer_0"])
    rid = await _scanned(svc_unprotected, root)
    plan = await svc_unprotected.plan_retention(rid, 1, force=True)
    assert plan.file_count == 299
    claimed: list[int] = []

    def progress(_p: DeleteProgress) -> None:
        (n,) = _sql(db_path, "SELECT count(*) FROM files WHERE state = 'deleting'")[0]
        if not claimed or claimed[-1] != n:
            claimed.append(int(str(n)))

    result = await svc_unprotected.execute(plan, progress)
    assert result.ok and len(result.deleted) == 299
    assert claimed == [64, 128, 107]


async def test_an_empty_plan_with_nothing_interrupted_records_nothing(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    root, _ck = tree
    rid = await _scanned(svc_unprotected, root)
    result = await svc_unprotected.execute(await svc_unprotected.plan_steps(rid, []))
    assert (result.results, result.removed_dirs, result.freed_bytes) == ((), (), 0)
    assert (result.seconds, result.run_id, result.recovered) == (0.0, None, 0)
    assert _sql(db_path, "SELECT count(*) FROM deletion_runs") == [(0,)]


async def test_interrupted_rows_under_a_root_gone_from_disk_are_left_claimed(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str, tmp_path: Path
) -> None:
    """The root was moved away: its claimed rows cannot be finished (nothing is unlinked
    elsewhere) and stay claimed for a later run; the count of files finished is 0."""
    root, _ck = tree
    await _scanned(svc_unprotected, root)
    _sql(db_path, "UPDATE files SET state = 'deleting' WHERE relpath LIKE 'layer_0/%'")
    root.rename(tmp_path / "moved")
    assert await svc_unprotected.finish_interrupted() == 0
    states = {
        str(s) for (s,) in _sql(db_path, "SELECT state FROM files WHERE relpath LIKE 'layer_0/%'")
    }
    assert states == {"deleting"}
    assert len(list((tmp_path / "moved").rglob("*.safetensors"))) == 9


async def test_finishing_when_nothing_was_interrupted_finishes_nothing(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService
) -> None:
    root, _ck = tree
    await _scanned(svc_unprotected, root)
    assert await svc_unprotected.finish_interrupted() == 0
    assert await svc_unprotected.deleter.recover() == 0


async def test_a_step_row_rewritten_to_an_unsafe_path_mid_run_is_kept(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str
) -> None:
    """After the run a step left with no file rows (a file appeared in it, so its folder
    stays) is dropped only when its folder is seen gone; a row whose path is no longer a
    safe step path cannot be judged and is kept."""
    root, ck = tree
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    (ck / "checkpoint_100" / "late.bin").write_bytes(b"after the scan")
    _sql(
        db_path,
        "UPDATE steps SET relpath = '../elsewhere' WHERE relpath = ?",
        ("t/checkpoints/checkpoint_100",),
    )
    result = await svc_unprotected.execute(plan)
    assert len(result.deleted) == 3 and result.removed_step_ids == ()
    assert "../elsewhere" in _step_rows(db_path)


async def test_an_interrupted_deletion_of_a_symlink_removes_the_link_only(
    tree: tuple[Path, Path], svc_unprotected: CheckpointService, db_path: str, tmp_path: Path
) -> None:
    """A claimed row of a symlink (planned with --include-foreign) is finished as a link:
    the link goes, what it points to is untouched."""
    root, ck = tree
    target = tmp_path / "outside.safetensors"
    target.write_bytes(b"not in the root")
    link = ck / "checkpoint_100" / "link.safetensors"
    link.symlink_to(target)
    await _scanned(svc_unprotected, root)
    _sql(db_path, "UPDATE files SET state = 'deleting' WHERE relpath = 'link.safetensors'")
    assert await svc_unprotected.finish_interrupted() == 1
    assert not link.is_symlink() and target.read_bytes() == b"not in the root"
    assert "t/checkpoints/checkpoint_100/link.safetensors" not in _rows(db_path)


async def test_interrupted_rows_of_several_roots_are_finished_root_by_root(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Claimed rows under three roots: the first root was moved away (left claimed); in the
    second, a damaged step row comes first (its files' rows are put back with the refusal,
    nothing there touched) and its other claimed step is still finished; so is the third's:
    one root's or step's trouble never stops the next."""
    roots = [tmp_path / n for n in ("a", "b", "c")]
    for r in roots:
        make_training(r, "t", [100, 200], layers=LAYERS)
        await _scanned(svc_unprotected, r)
    _sql(
        db_path,
        "UPDATE files SET state = 'deleting' WHERE step_id IN "
        "(SELECT id FROM steps WHERE relpath = 't/checkpoints/checkpoint_100')",
    )
    (bad,) = _sql(  # scanned before b's step 100: its files' rows come first
        db_path,
        "SELECT s.id FROM steps s JOIN trainings t ON t.id = s.training_id "
        "JOIN roots r ON r.id = t.root_id WHERE r.path = ? AND s.step = 200",
        (str(roots[1]),),
    )[0]
    _sql(db_path, "UPDATE files SET state = 'deleting' WHERE step_id = ?", (bad,))
    _sql(db_path, "UPDATE steps SET relpath = x'00ff' WHERE id = ?", (bad,))
    roots[0].rename(tmp_path / "moved")
    assert await svc_unprotected.finish_interrupted() == 6
    for r in roots[1:]:
        assert _files(r / "t/checkpoints/checkpoint_100") == []
    assert len(_files(roots[1] / "t/checkpoints/checkpoint_200")) == 3
    assert len(_files(tmp_path / "moved" / "t/checkpoints/checkpoint_100")) == 3
    states = _sql(
        db_path,
        "SELECT f.step_id = ?, f.state, f.error FROM files f "
        "WHERE f.state = 'deleting' OR f.error IS NOT NULL",
        (bad,),
    )
    assert sorted(states) == [(0, "deleting", None)] * 3 + [(1, "active", REFUSED)] * 3


class _Died(BaseException):
    """The deleting process dying (raised from its unlink: a fault root cannot cause)."""


async def test_a_run_that_died_is_recorded_step_by_step_by_the_run_that_finishes_it(
    tree: tuple[Path, Path],
    svc_unprotected: CheckpointService,
    db_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process dies after its second unlink (os.unlink wrapped to raise after the real
    call); the next deleting run finishes the claimed files, keeps a folder that was empty
    before in the step (a recovered step is never taken as whole), and records the dead
    run's step by its path with every file counted as deleted."""
    root, ck = tree
    (ck / "checkpoint_100" / "layer_9").mkdir()  # empty layer debris from before the run
    plan = await _plan_first_step(svc_unprotected, root, db_path)
    real_unlink, calls = os.unlink, [0]

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        real_unlink(path, dir_fd=dir_fd)
        calls[0] += 1
        if calls[0] == 2:
            raise _Died

    monkeypatch.setattr(fs.os, "unlink", unlink)
    with pytest.raises(_Died):
        await svc_unprotected.execute(plan)
    monkeypatch.undo()
    assert len(_files(ck / "checkpoint_100")) == 1
    assert await svc_unprotected.finish_interrupted() == 3
    assert _files(ck / "checkpoint_100") == []
    assert [p.name for p in (ck / "checkpoint_100").iterdir()] == ["layer_9"]
    (dead,) = await svc_unprotected.history(str(root))
    assert [(s.path, s.files_planned, s.files_deleted, s.result) for s in dead.steps] == [
        ("t/checkpoints/checkpoint_100", 3, 3, "deleted")
    ]

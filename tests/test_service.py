"""CheckpointService end to end on real files and a real SQLite index."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from ckpt_tui.errors import IndexError_
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import FileStatus, Outcome
from tests.conftest import empty_dirs, files_under, make_training, write_checkpoint


@pytest.fixture
def db_path(any_db: str) -> str:
    """Every test here runs on SQLite and, when configured, on PostgreSQL."""
    return any_db


async def scanned(svc: CheckpointService, root: Path) -> int:
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    return info.id


async def test_original_scenario_cascade_layer_by_layer(tmp_path: Path, svc_unprotected) -> None:
    """The note's scenario: layers go one at a time; the step dir goes with its last layer."""
    svc = svc_unprotected
    root = tmp_path / "root"
    base = make_training(root, "train_36766f85", [1000, 2000, 498000])
    other = make_training(root, "train_other", [5, 6], layers=("layer_1",))
    before_other = files_under(other)
    root_id = await scanned(svc, root)
    t = next(t for t in await svc.trainings(root_id) if t.name == "train_36766f85")
    steps = await svc.steps(t.id)
    step_1000 = steps[0]
    files = await svc.files(step_1000.id)
    assert [f.layer for f in files] == [7, 14, 18]
    step_dir = base / "checkpoint_1000"
    async with svc.db.sessions() as session:
        for i, f in enumerate(files):
            assert await svc.delete_checkpoint(session, f.id) is True
            assert not Path(f.path).exists()
            assert not Path(f.path).parent.exists(), "emptied layer directory must go"
            if i < len(files) - 1:
                assert step_dir.is_dir(), "step directory stays while a layer remains"
        assert not step_dir.exists(), "the last layer takes the step directory with it"
        assert await svc.delete_checkpoint(session, files[0].id) is False
    # the index no longer lists the step
    assert [s.step for s in await svc.steps(t.id)] == [2000, 498000]
    # prune keeps the newest; the other training is untouched
    plan = await svc.plan_retention(root_id, 1, ["train_36766f85"])
    assert [s.step for s in plan.steps] == [2000]
    result = await svc.execute(plan)
    assert result.ok and len(result.deleted) == 3
    assert sorted(p.name for p in base.iterdir()) == ["checkpoint_498000"]
    assert files_under(other) == before_other
    assert empty_dirs(root) == []


async def test_steps_sort_numerically_and_layouts(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    make_training(root, "miStudio", [900, 10000, 2000], layers=("layer_7", "layer_14_residual"))
    write_checkpoint(root / "single" / "checkpoint_5" / "sae.safetensors", 5)
    hf = root / "hf_run" / "checkpoint-500"
    write_checkpoint(hf / "model.safetensors", 500)
    (hf / "optimizer.pt").write_bytes(b"x" * 1000)
    (hf / "trainer_state.json").write_text("{}")
    root_id = await scanned(svc, root)
    trainings = {t.name: t for t in await svc.trainings(root_id)}
    assert set(trainings) == {"miStudio", "single", "hf_run"}
    steps = await svc.steps(trainings["miStudio"].id)
    assert [s.dirname for s in steps] == ["checkpoint_900", "checkpoint_2000", "checkpoint_10000"]
    files = await svc.files(steps[0].id)
    assert {(f.layer, f.hook) for f in files} == {(7, None), (14, "residual")}
    hf_step = (await svc.steps(trainings["hf_run"].id))[0]
    hf_files = {Path(f.path).name: f for f in await svc.files(hf_step.id)}
    assert hf_files["model.safetensors"].status == FileStatus.OK
    assert hf_files["optimizer.pt"].status == FileStatus.OTHER
    assert hf_step.size_bytes == sum(os.path.getsize(hf / n) for n in hf_files)


async def test_rescan_is_incremental_and_forgets_gone_files(tree: Path, svc) -> None:
    first = await svc.scan(str(tree))
    assert first.headers_read == 15 and first.headers_reused == 0
    again = await svc.scan(str(tree))
    assert again.headers_read == 0 and again.headers_reused == 15
    gone = tree / "train_b" / "checkpoint_100" / "sae.safetensors"
    gone.unlink()
    gone.parent.rmdir()
    changed = tree / "train_b" / "checkpoint_200" / "sae.safetensors"
    write_checkpoint(changed, 201)
    third = await svc.scan(str(tree))
    assert third.headers_read == 1 and third.removed_files == 1
    root_id = (await svc.get_root(str(tree))).id
    t_b = next(t for t in await svc.trainings(root_id) if t.name == "train_b")
    assert [s.step for s in await svc.steps(t_b.id)] == [200, 300]


async def test_symlinked_layer_dir_is_listed_never_followed(
    tmp_path: Path, svc_unprotected
) -> None:
    svc = svc_unprotected
    root = tmp_path / "root"
    make_training(root, "t", [1, 2])
    victim = tmp_path / "victim"
    write_checkpoint(victim / "checkpoint.safetensors", 99)
    step_dir = root / "t" / "checkpoints" / "checkpoint_1"
    os.symlink(victim, step_dir / "layer_99")
    root_id = await scanned(svc, root)
    t = (await svc.trainings(root_id))[0]
    step = (await svc.steps(t.id))[0]
    files = {f.relpath: f for f in await svc.files(step.id)}
    assert files["layer_99"].status == FileStatus.SYMLINK and files["layer_99"].foreign
    assert files["layer_99"].size_bytes == 0, "a symlink's target is never counted"
    # the trainer wrote no such link: it is foreign, kept and named in the plan
    plan = await svc.plan_steps(root_id, [step.id])
    assert [f.path for f in plan.foreign] == [str(step_dir / "layer_99")]
    result = await svc.execute(plan)
    assert result.ok and (step_dir / "layer_99").is_symlink()
    # asked for after being shown, the link itself goes; its target never does
    plan = await svc.plan_steps(root_id, [step.id], include_foreign=True)
    result = await svc.execute(plan)
    assert result.ok
    assert (victim / "checkpoint.safetensors").is_file(), "the target must survive"
    assert not step_dir.exists()


async def test_file_changed_after_scan_survives_and_is_reported(
    tree: Path, svc_unprotected
) -> None:
    svc = svc_unprotected
    root_id = await scanned(svc, tree)
    t = next(t for t in await svc.trainings(root_id) if t.name == "train_a")
    step = (await svc.steps(t.id))[0]
    plan = await svc.plan_steps(root_id, [step.id])
    target = Path(plan.steps[0].files[0].relparts[-1])
    victim = Path(plan.root, *plan.steps[0].files[0].relparts)
    write_checkpoint(victim, 12345)  # rewritten after the scan
    result = await svc.execute(plan)
    assert victim.is_file() and target.name == "checkpoint.safetensors"
    [failed] = result.failed
    assert failed.outcome == Outcome.CHANGED and "changed since the scan" in (failed.error or "")
    assert len(result.deleted) == 2
    assert victim.parent.parent.is_dir(), "the step keeps the directory of the changed file"
    files = await svc.files(step.id)
    assert [f.path for f in files] == [str(victim)] and files[0].error


async def test_file_added_after_scan_survives_with_its_dirs(tree: Path, svc_unprotected) -> None:
    svc = svc_unprotected
    root_id = await scanned(svc, tree)
    t = next(t for t in await svc.trainings(root_id) if t.name == "train_a")
    step = (await svc.steps(t.id))[0]
    plan = await svc.plan_steps(root_id, [step.id])
    newcomer = write_checkpoint(Path(step.path) / "layer_7" / "late.safetensors", 1)
    result = await svc.execute(plan)
    assert result.ok and len(result.deleted) == 3
    assert newcomer.is_file()
    assert not (Path(step.path) / "layer_14").exists()
    assert result.freed_bytes == plan.bytes


async def test_failed_unlink_keeps_its_row(tree: Path, svc_unprotected, monkeypatch) -> None:
    svc = svc_unprotected
    root_id = await scanned(svc, tree)
    t = next(t for t in await svc.trainings(root_id) if t.name == "train_a")
    step = (await svc.steps(t.id))[1]
    plan = await svc.plan_steps(root_id, [step.id])
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):  # root ignores permission bits, so the OS call is patched
        if kwargs.get("dir_fd") is not None and path == "checkpoint.safetensors":
            fd_path = os.readlink(f"/proc/self/fd/{kwargs['dir_fd']}")
            if fd_path.endswith("layer_14"):
                raise PermissionError(13, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    result = await svc.execute(plan)
    assert not result.ok
    [failed] = result.failed
    assert failed.path.endswith("layer_14/checkpoint.safetensors")
    assert "Permission denied" in (failed.error or "")
    assert Path(failed.path).is_file()
    remaining = await svc.files(step.id)
    assert [f.path for f in remaining] == [failed.path]
    assert remaining[0].error and "Permission denied" in remaining[0].error
    assert result.freed_bytes == plan.bytes - remaining[0].size_bytes


async def test_interrupted_deletion_is_reported_on_open_and_finished_by_a_deleter(
    tree: Path, db_path: str
) -> None:
    svc = await CheckpointService.open(db_path)
    root_id = await scanned(svc, tree)
    t = next(t for t in await svc.trainings(root_id) if t.name == "train_a")
    step = (await svc.steps(t.id))[0]
    files = await svc.files(step.id)
    # A crash after the intent was committed and one file was unlinked, before the rest.
    async with svc.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE files SET state='deleting' WHERE step_id=:s"), {"s": step.id}
        )
    await svc.close()
    os.unlink(files[0].path)
    svc = await CheckpointService.open(db_path)
    try:
        # opening (what ls, a dry run and the read-only TUI do) touches nothing: it reports
        assert all(Path(f.path).exists() for f in files[1:])
        pending = await svc.interrupted()
        assert pending is not None
        assert (pending.files, pending.steps) == (len(files), 1)
        assert pending.first_steps == (os.path.relpath(step.path, tree),)
        assert await svc.finish_interrupted() == len(files)
        assert await svc.interrupted() is None
        async with svc.db.sessions() as session:
            left = (
                await session.execute(text("SELECT count(*) FROM files WHERE state='deleting'"))
            ).scalar()
        assert left == 0
        assert not Path(step.path).exists(), "the interrupted step is finished and collapsed"
        assert [s.step for s in await svc.steps(t.id)] == [2000, 10000, 30000]
    finally:
        await svc.close()


async def test_dry_run_bytes_equal_freed_bytes(tree: Path, svc) -> None:
    root_id = await scanned(svc, tree)
    plan = await svc.plan_retention(root_id, 2)
    assert [(s.training, s.step) for s in plan.steps] == [
        ("train_a", 900),
        ("train_a", 2000),
        ("train_b", 100),
    ]
    assert {k.step: k.reasons for k in plan.keep if k.training == "train_a"} == {
        10000: ("keep newest 2",),
        30000: ("newest",),
    }
    result = await svc.execute(plan)
    assert result.freed_bytes == plan.bytes > 0


async def test_pinned_step_is_kept_by_retention(tree: Path, svc) -> None:
    root_id = await scanned(svc, tree)
    t = next(t for t in await svc.trainings(root_id) if t.name == "train_a")
    steps = await svc.steps(t.id)
    await svc.set_pinned([steps[0].id], True)
    plan = await svc.plan_retention(root_id, 1, ["train_a"])
    assert [s.step for s in plan.steps] == [2000, 10000]
    assert any(k.step == 900 and "pinned" in k.reasons for k in plan.keep)
    explicit = await svc.plan_steps(root_id, [steps[0].id])
    assert explicit.empty and explicit.protected[0].reason == "pinned"


async def test_newest_and_recent_files_are_protected_unless_forced(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    make_training(root, "t", [1, 2], layers=("layer_0",))
    fresh = write_checkpoint(
        root / "t" / "checkpoints" / "checkpoint_0" / "layer_0" / "checkpoint.safetensors",
        0,
        mtime=time.time(),
    )
    root_id = await scanned(svc, root)
    t = (await svc.trainings(root_id))[0]
    ids = [s.id for s in await svc.steps(t.id)]
    plan = await svc.plan_steps(root_id, ids)
    reasons = {Path(p.path).parent.parent.name: p.reason for p in plan.protected}
    assert "newest step" in reasons["checkpoint_2"]
    assert "modified" in reasons["checkpoint_0"]
    forced = await svc.plan_steps(root_id, ids, force=True)
    assert forced.file_count == 3 and str(fresh) in {
        os.path.join(forced.root, *f.relparts) for f in forced.files
    }


async def test_sqlite_pragmas_and_schema_version(tmp_path: Path) -> None:
    db_path = str(tmp_path / "index.sqlite3")
    svc = await CheckpointService.open(db_path)
    async with svc.db.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() > 0
    await svc.close()
    with sqlite3.connect(db_path) as con:
        con.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    with pytest.raises(IndexError_, match="schema version 999"):
        await CheckpointService.open(db_path)


async def test_one_index_holds_several_roots(tmp_path: Path, svc) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_training(a, "ta", [1], layers=("layer_0",))
    make_training(b, "tb", [1, 2], layers=("layer_0",))
    ra, rb = await scanned(svc, a), await scanned(svc, b)
    assert ra != rb
    assert [t.name for t in await svc.trainings(ra)] == ["ta"]
    assert [t.step_count for t in await svc.trainings(rb)] == [2]

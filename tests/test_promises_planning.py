"""``--training`` picks trainings exactly as the CLI contract says: a path relative to the
root (the training folder or the folder holding its steps), else a full name, else a unique
last component; a name several trainings share is refused with every candidate listed, an
unknown one with the root named. The ids are checked against the index read with sqlite3.
Kills the ``resolve_trainings`` mutants of ``ckpt_tui/planning.py`` (mutation/report.md).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from ckpt_tui.errors import TargetError
from ckpt_tui.service import CheckpointService
from tests.conftest import OLD, make_training, write_checkpoint


def _ids_by_name(db_path: str) -> dict[str, int]:
    with sqlite3.connect(db_path) as con:
        return {name: tid for tid, name in con.execute("SELECT id, name FROM trainings")}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    for name in ("alice/exp1", "bob/exp1", "lab/team/exp2"):
        make_training(r, name, [100], layers=["layer_0"])
    write_checkpoint(r / "solo" / "checkpoint_100" / "sae.safetensors", 100)
    return r


async def test_training_names_resolve_by_path_then_name_then_last_component(
    root: Path, svc: CheckpointService, db_path: str
) -> None:
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    ids = _ids_by_name(db_path)
    assert sorted(ids) == ["alice/exp1", "bob/exp1", "lab/team/exp2", "solo"]
    cases = {
        ("alice/exp1/checkpoints",): {"alice/exp1"},  # the folder holding its steps
        ("/bob/exp1/checkpoints/",): {"bob/exp1"},  # slashes around it are ignored
        ("alice/exp1",): {"alice/exp1"},  # its name
        ("exp2",): {"lab/team/exp2"},  # a last component only one training has
        ("solo",): {"solo"},
        ("alice/exp1", "solo", "exp2"): {"alice/exp1", "solo", "lab/team/exp2"},
    }
    for names, expected in cases.items():
        assert await svc.resolve_trainings(info.id, names) == {ids[n] for n in expected}, names


async def test_an_ambiguous_or_unknown_training_name_is_refused_with_one_line(
    root: Path, svc: CheckpointService
) -> None:
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    with pytest.raises(TargetError) as err:
        await svc.resolve_trainings(info.id, ["exp1"])
    assert str(err.value) == (
        f"training name 'exp1' is ambiguous under {root}: "
        "alice/exp1/checkpoints, bob/exp1/checkpoints; give one of these paths"
    )
    with pytest.raises(TargetError) as err:
        await svc.resolve_trainings(info.id, ["solo", "nope"])
    assert str(err.value) == f"no training named 'nope' under {root}"


def _step_dirs(folder: Path) -> set[str]:
    """The step folders below ``folder`` as the disk has them."""
    return {str(p) for p in folder.rglob("checkpoint_*") if p.is_dir()}


async def test_rm_of_a_training_folder_plans_exactly_its_steps(
    root: Path, svc: CheckpointService
) -> None:
    """``rm ROOT/alice/exp1`` (or the folder of its steps) plans every step of that training
    and of no other; a folder that only holds trainings, or the root, is not a target."""
    make_training(root, "alice/exp1", [200], layers=["layer_0"])
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    cases = {
        root / "alice" / "exp1": _step_dirs(root / "alice" / "exp1"),
        root / "alice" / "exp1" / "checkpoints": _step_dirs(root / "alice" / "exp1"),
        root / "solo": _step_dirs(root / "solo"),
    }
    assert len(cases[root / "alice" / "exp1"]) == 2
    for target, expected in cases.items():
        plan = await svc.plan_targets(info.id, [str(target)], force=True)
        assert {s.path for s in plan.steps} == expected, target
    for target in (root / "alice", root, root / "lab" / "team"):
        with pytest.raises(TargetError) as err:
            await svc.plan_targets(info.id, [str(target)], force=True)
        assert str(err.value) == (
            f"{target} is not an indexed step, file or training folder "
            f"(run `ckpt-tui scan {root}` first?)"
        )


TINY = (2).to_bytes(8, "little") + b"{}"  # a valid safetensors file with no tensor


def _file_ids(db_path: str, root: Path) -> dict[str, int]:
    """File ids by absolute path, read from the index with sqlite3."""
    with sqlite3.connect(db_path) as con:
        rows = con.execute(
            "SELECT f.id, s.relpath, f.relpath FROM files f JOIN steps s ON s.id = f.step_id"
        ).fetchall()
    return {str(root / srel / frel): fid for fid, srel, frel in rows}


async def test_marked_files_are_planned_exactly_past_one_query_chunk(
    tmp_path: Path, svc: CheckpointService, db_path: str
) -> None:
    """Marking 600 files (more than one IN (...) chunk) plans exactly those; without --force
    the newest step's file is protected, and a foreign file stays out of the plan."""
    root = tmp_path / "root"
    old = root / "run" / "checkpoint_100"
    old.mkdir(parents=True)
    for i in range(600):
        (old / f"shard_{i:03}.safetensors").write_bytes(TINY)
    (old / "notes.txt").write_text("mine")
    for p in old.iterdir():  # written long ago: not protected as recently modified
        os.utime(p, (OLD, OLD))
    write_checkpoint(root / "run" / "checkpoint_200" / "sae.safetensors", 200)
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    ids = _file_ids(db_path, root)
    assert len(ids) == 602
    plan = await svc.plan_files(info.id, ids.values())
    shards = {str(p) for p in old.glob("shard_*.safetensors")}
    assert {os.path.join(root, *f.relparts) for f in plan.files} == shards
    assert len(plan.files) == 600
    assert [p.path for p in plan.protected] == [str(root / "run/checkpoint_200/sae.safetensors")]
    assert [f.path for f in plan.foreign] == [str(old / "notes.txt")]

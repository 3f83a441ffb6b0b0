"""A hostile or damaged index: rows edited with sqlite3 to point outside the root, through
``..``, absolute, through a symlinked directory, or holding the wrong types; a corrupt file;
an unknown schema version. Each is refused with a clear message and the victim survives.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from .conftest import (
    Victim,
    assert_one_line_error,
    build_tree,
    files_on_disk,
    index_files,
    run_cli,
    sql,
)

STEP = "train_000/checkpoints/checkpoint_100"
REFUSED = "not a valid path inside the root"


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    build_tree(root, trainings=1, steps=(100, 200, 300), layers=2)
    assert run_cli("scan", root, "--db", db).returncode == 0
    return root, db


def _file_id(db: Path, step_rel: str, rel: str) -> int:
    con = sqlite3.connect(db)
    try:
        row = con.execute(
            "SELECT f.id FROM files f JOIN steps s ON s.id = f.step_id "
            "WHERE s.relpath = ? AND f.relpath = ?",
            (step_rel, rel),
        ).fetchone()
    finally:
        con.close()
    return int(row[0])


def _point_at(db: Path, fid: int, target: Path) -> None:
    """Give a row the identity of ``target`` too, so only path checks can stop it."""
    st = target.lstat()
    sql(
        db,
        "UPDATE files SET inode = ?, size_bytes = ?, mtime_ns = ?, nlink = ? WHERE id = ?",
        (st.st_ino, st.st_size, st.st_mtime_ns, st.st_nlink, fid),
    )


def _prune(root: Path, db: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    proc = run_cli("prune", root, "--keep", "1", "--json", "--db", db, "--force", *extra)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


ESCAPES = {
    "dotdot-file": ("files", "relpath", "../../../../victim/checkpoint.safetensors"),
    "dotdot-step": ("steps", "relpath", "train_000/checkpoints/../../../victim/checkpoint_100"),
    "absolute-file": ("files", "relpath", "{victim}/checkpoint.safetensors"),
    "absolute-step": ("steps", "relpath", "{victim}/checkpoint_100"),
    "empty-component": ("files", "relpath", "layer_0//checkpoint.safetensors"),
    "trailing-slash": ("files", "relpath", "layer_0/"),
    "dot-component": ("files", "relpath", "./layer_0/checkpoint.safetensors"),
    "nul": ("files", "relpath", "layer_0/checkpoint.safetensors\0/../../victim"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_rows_pointing_outside_the_root_are_refused(
    tmp_path: Path, victim: Victim, case: str
) -> None:
    root, db = _setup(tmp_path)
    table, _column, value = ESCAPES[case]
    value = value.format(victim=victim.path)
    fid = _file_id(db, STEP, "layer_0/checkpoint.safetensors")
    _point_at(db, fid, victim.path / "checkpoint.safetensors")
    if table == "files":
        sql(db, "UPDATE files SET relpath = ? WHERE id = ?", (value, fid))
    else:
        sql(db, "UPDATE steps SET relpath = ? WHERE relpath = ?", (value, STEP))
    code, plan, err = _prune(root, db, "--dry-run")
    assert code == 0, err
    reasons = [p["reason"] for p in plan["protected"]]  # type: ignore[union-attr]
    assert any(REFUSED in r for r in reasons), f"no refusal shown: {plan}"
    planned = [f for s in plan["delete"] for f in s["files"]]  # type: ignore[union-attr]
    assert not [f for f in planned if "victim" in f or ".." in f]
    code, result, err = _prune(root, db, "--yes")
    # The refused row is protected, not a failed item: the rest of the plan is carried out
    # and the run succeeds, naming the refusal.
    assert code == 0, err
    assert result["failed"] == []  # type: ignore[index]
    assert any(REFUSED in p["reason"] for p in result["protected"])  # type: ignore[index,union-attr]
    victim.assert_intact()
    step100 = root / STEP
    step200 = step100.with_name("checkpoint_200")
    layer0, layer1 = (step100 / f"layer_{n}" / "checkpoint.safetensors" for n in (0, 1))
    if table == "files":
        # Only the hijacked row is refused: its sibling in the same step is deleted, and the
        # real layer_0 file (no valid row names it any more) is left where it is.
        assert layer0.exists()
        assert not layer1.exists() and not layer1.parent.exists()
        deleted = {d["path"] for d in result["deleted"]}  # type: ignore[union-attr]
        assert str(layer1) in deleted and str(layer0) not in deleted
    else:
        # The whole step's row is refused: nothing of that step is touched.
        assert layer0.exists() and layer1.exists()
    assert not step200.exists(), "the valid rest of the plan was not carried out"
    assert files_on_disk(root) == {
        *([layer0] if table == "files" else [layer0, layer1]),
        *(
            step100.with_name("checkpoint_300") / f"layer_{n}" / "checkpoint.safetensors"
            for n in (0, 1)
        ),
    }
    # The refused row is kept (never silently dropped), so the user can still see it.
    assert any(r.id == fid for r in index_files(db))


@pytest.mark.parametrize("shape", ["layer-dir", "step-dir"])
def test_rows_through_a_symlinked_directory_are_refused(
    tmp_path: Path, victim: Victim, shape: str
) -> None:
    """Rows valid by the grammar, whose directory became a symlink to the victim."""
    root, db = _setup(tmp_path)
    fid = _file_id(db, STEP, "layer_0/checkpoint.safetensors")
    if shape == "layer-dir":
        # layer_0 of checkpoint_100 now links to the victim, which has checkpoint.safetensors.
        shutil.rmtree(root / STEP / "layer_0")
        (root / STEP / "layer_0").symlink_to(victim.path, target_is_directory=True)
        _point_at(db, fid, victim.path / "checkpoint.safetensors")
    else:
        # The whole step directory links to the victim, which has layer_0/checkpoint.safetensors.
        shutil.rmtree(root / STEP)
        (root / STEP).symlink_to(victim.path, target_is_directory=True)
        _point_at(db, fid, victim.path / "layer_0" / "checkpoint.safetensors")
    code, result, _ = _prune(root, db, "--yes")
    victim.assert_intact()
    assert code == 1
    failed = {f["path"]: f["error"] for f in result["failed"]}  # type: ignore[union-attr]
    bad = str(root / STEP / "layer_0" / "checkpoint.safetensors")
    assert bad in failed and "symlink" in failed[bad]
    rows = {r.id: r for r in index_files(db)}
    assert fid in rows and rows[fid].error and "symlink" in rows[fid].error
    assert (root / STEP).is_symlink() or (root / STEP / "layer_0").is_symlink()


WRONG_TYPES = {
    "size-text": "UPDATE files SET size_bytes = 'abc' WHERE id = :fid",
    "inode-text": "UPDATE files SET inode = 'x' WHERE id = :fid",
    "mtime-real": "UPDATE files SET mtime_ns = 1.5 WHERE id = :fid",
    "relpath-blob": "UPDATE files SET relpath = X'6C617965725F302F' WHERE id = :fid",
    "state-unknown": "UPDATE files SET state = 'bogus' WHERE id = :fid",
    "status-unknown": "UPDATE files SET status = 'weird' WHERE id = :fid",
    "step-text": "UPDATE steps SET step = 'abc' WHERE relpath = '" + STEP + "'",
    "pinned-text": "UPDATE steps SET pinned = 'maybe' WHERE relpath = '" + STEP + "'",
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_rows_with_wrong_types_are_refused(tmp_path: Path, victim: Victim, case: str) -> None:
    root, db = _setup(tmp_path)
    fid = _file_id(db, STEP, "layer_0/checkpoint.safetensors")
    target = root / STEP / "layer_0" / "checkpoint.safetensors"
    sql(db, WRONG_TYPES[case].replace(":fid", str(fid)))
    before = files_on_disk(root)
    code, plan, err = _prune(root, db, "--dry-run")
    assert code == 0, err
    reasons = {p["path"]: p["reason"] for p in plan["protected"]}  # type: ignore[union-attr]
    assert any("refused" in r for r in reasons.values()), f"no refusal shown: {plan}"
    code, result, err = _prune(root, db, "--yes")
    assert code == 0, err
    victim.assert_intact()
    assert target.exists(), "a file whose row is malformed was deleted"
    assert files_on_disk(root) <= before
    # The well-formed rest of the plan went: checkpoint_200 is pruned in every case.
    assert not (root / STEP).with_name("checkpoint_200").exists()
    assert str(target) not in {d["path"] for d in result["deleted"]}  # type: ignore[union-attr]


def test_corrupt_database_file_is_refused_with_one_line(tmp_path: Path) -> None:
    root, db = _setup(tmp_path)
    bad = tmp_path / "corrupt.sqlite3"
    shutil.copy(db, bad)
    data = bytearray(bad.read_bytes())
    page = 4096
    assert len(data) > 2 * page
    for i in range(page + 16, min(len(data), 3 * page), 7):  # scribble over btree pages
        data[i] ^= 0xA5
    bad.write_bytes(bytes(data))
    before = files_on_disk(root)
    for args in (["ls", root], ["prune", root, "--keep", "1", "--yes", "--force"]):
        proc = run_cli(*args, "--db", bad)
        assert_one_line_error(proc, str(bad))
        assert (
            "corrupt" in proc.stderr
            or "malformed" in proc.stderr
            or "not a database" in (proc.stderr)
        )
    assert files_on_disk(root) == before


def test_not_a_database_file_is_refused_with_one_line(tmp_path: Path) -> None:
    root, _ = _setup(tmp_path)
    bad = tmp_path / "garbage.sqlite3"
    bad.write_bytes(os.urandom(8192))
    proc = run_cli("prune", root, "--keep", "1", "--yes", "--db", bad)
    assert_one_line_error(proc, str(bad))


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    root, db = _setup(tmp_path)
    sql(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = files_on_disk(root)
    proc = run_cli("prune", root, "--keep", "1", "--yes", "--force", "--db", db)
    assert_one_line_error(proc, "schema version 99")
    assert files_on_disk(root) == before


@pytest.mark.parametrize("case", ["size-text", "relpath-blob", "relpath-dotdot", "step-text"])
async def test_recovery_of_a_hostile_deleting_row_never_crashes_the_open(
    tmp_path: Path, victim: Victim, case: str
) -> None:
    """A malformed row left 'deleting' must not make every later open crash (or delete)."""
    from ckpt_tui.service import CheckpointService

    root, db = _setup(tmp_path)
    fid = _file_id(db, STEP, "layer_0/checkpoint.safetensors")
    target = root / STEP / "layer_0" / "checkpoint.safetensors"
    edits = {
        "size-text": "UPDATE files SET size_bytes = 'abc' WHERE id = :fid",
        "relpath-blob": "UPDATE files SET relpath = X'6C617965725F30' WHERE id = :fid",
        "relpath-dotdot": "UPDATE files SET relpath = "
        "'../../../../victim/checkpoint.safetensors' WHERE id = :fid",
        "step-text": "UPDATE steps SET step = 'abc' WHERE relpath = '" + STEP + "'",
    }
    if case == "relpath-dotdot":
        _point_at(db, fid, victim.path / "checkpoint.safetensors")
    sql(db, edits[case].replace(":fid", str(fid)))
    sql(db, "UPDATE files SET state = 'deleting' WHERE id = ?", (fid,))
    async with await CheckpointService.open(str(db), recover=True):  # a deleting command
        pass
    victim.assert_intact()
    rows = {r.id: r for r in index_files(db)}
    assert all(r.state == "active" for r in rows.values())
    if case != "step-text":  # a bad step number does not make the path unsafe
        assert target.exists(), "a file behind a malformed row was deleted"
        assert fid in rows and rows[fid].error and "refused" in rows[fid].error

"""Per-item unlink errors: one refused file keeps its row (with the error), the rest proceeds;
EROFS/EIO stop the batch cleanly and a re-run resumes.

Root ignores permission bits, so EACCES/EPERM/EBUSY/EROFS/EIO are produced by making
``os.unlink`` raise (in-process with monkeypatch, or in the CLI subprocess via _runner.py).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ckpt_tui import fs
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import Outcome

from .conftest import (
    assert_consistent,
    build_tree,
    files_on_disk,
    index_files,
    run_cli,
    scan,
)

BAD = "train_000/checkpoints/checkpoint_200/layer_1/checkpoint.safetensors"


@pytest.mark.parametrize("code", ["EACCES", "EPERM", "EBUSY"])
def test_cli_one_refused_file_keeps_its_row_and_the_rest_proceeds(
    tmp_path: Path, code: str
) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=2, steps=(100, 200, 300), layers=2)
    assert run_cli("scan", root, "--db", db).returncode == 0
    proc = run_cli(
        "prune", root, "--keep", "1", "--yes", "--json", "--db", db, unlink_errno=f"{BAD}:{code}"
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    bad = root / BAD
    assert [f["path"] for f in out["failed"]] == [str(bad)]
    assert os.strerror(getattr(errno, code)) in out["failed"][0]["error"]
    # That file and its directories stay; everything else planned is gone.
    assert bad.exists()
    expected = set(tree.newest_files()) | {bad}
    assert files_on_disk(root) == expected
    assert len(out["deleted"]) == 8 - 1
    # Its row stays, active, with the error; no other row lists a missing file.
    rows = {r.path: r for r in index_files(db)}
    assert set(rows) == expected
    assert rows[bad].state == "active" and rows[bad].error and code in rows[bad].error
    assert_consistent(db, root)
    # Once the fault is gone a re-run deletes it (and collapses its directories).
    again = run_cli("prune", root, "--keep", "1", "--yes", "--json", "--db", db)
    assert again.returncode == 0, again.stderr
    assert files_on_disk(root) == set(tree.newest_files())
    assert not (root / "train_000/checkpoints/checkpoint_200").exists()


@pytest.mark.parametrize("code", [errno.EROFS, errno.EIO])
async def test_stop_errors_stop_the_batch_cleanly_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=2, steps=(100, 200, 300, 400), layers=2)
    real_unlink = os.unlink
    calls = [0]

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        # Stands in for a filesystem gone read-only / failing on the 4th unlink.
        calls[0] += 1
        if calls[0] >= 4:
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        real_unlink(path, dir_fd=dir_fd)

    async with await CheckpointService.open(str(db)) as svc:
        root_id = await scan(svc, root)
        plan = await svc.plan_retention(root_id, 1, force=True)
        assert plan.file_count == 12
        monkeypatch.setattr(fs.os, "unlink", unlink)
        result = await svc.execute(plan)
        monkeypatch.undo()
    assert result.stopped and os.strerror(code) in result.stopped
    assert not result.ok
    assert calls[0] == 4, "kept unlinking after the filesystem refused"
    assert len(result.deleted) == 3
    assert sum(r.outcome == Outcome.SKIPPED for r in result.results) == 9
    # Nothing left 'deleting'; rows of untouched files went back to active without an error.
    rows = index_files(db)
    assert all(r.state == "active" for r in rows)
    assert len(rows) == 16 - 3
    assert_consistent(db, root)
    # A re-run resumes and finishes.
    async with await CheckpointService.open(str(db)) as svc:
        plan = await svc.plan_retention(root_id, 1, force=True)
        assert plan.file_count == 9
        result = await svc.execute(plan)
    assert result.ok
    assert files_on_disk(root) == set(tree.newest_files())
    assert_consistent(db, root)


def test_cli_stop_error_exit_code_and_message(tmp_path: Path) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200, 300), layers=2)
    assert run_cli("scan", root, "--db", db).returncode == 0
    proc = run_cli(
        "prune",
        root,
        "--keep",
        "1",
        "--yes",
        "--db",
        db,
        unlink_errno="checkpoint_200/layer_0:EROFS",
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "Read-only file system" in proc.stderr and "run again to resume" in proc.stderr
    assert all(r.state == "active" for r in index_files(db))
    assert_consistent(db, root)
    again = run_cli("prune", root, "--keep", "1", "--yes", "--db", db)
    assert again.returncode == 0, again.stderr
    assert files_on_disk(root) == set(tree.newest_files())


async def test_rmdir_ebusy_stops_the_climb_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer directory that is a mount point (EBUSY on rmdir): files go, the dirs stay."""
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    build_tree(root, trainings=1, steps=(100, 200), layers=2)
    layer = root / "train_000/checkpoints/checkpoint_100/layer_0"
    real_rmdir = os.rmdir

    def rmdir(path: Any, *, dir_fd: int | None = None) -> None:
        # Root can remove any empty directory; EBUSY (a mount point) is produced by raising.
        if (
            os.fsdecode(path) == "layer_0"
            and dir_fd is not None
            and os.readlink(f"/proc/self/fd/{dir_fd}") == str(layer.parent)
        ):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), "layer_0")
        real_rmdir(path, dir_fd=dir_fd)

    async with await CheckpointService.open(str(db)) as svc:
        root_id = await scan(svc, root)
        plan = await svc.plan_retention(root_id, 1, force=True)
        monkeypatch.setattr(fs.os, "rmdir", rmdir)
        result = await svc.execute(plan)
        monkeypatch.undo()
    assert result.ok and len(result.deleted) == 2
    assert layer.is_dir() and not any(layer.iterdir())
    assert not (layer.parent / "layer_1").exists()
    assert layer.parent.is_dir()  # the climb stopped at the busy layer
    assert all(r.state == "active" for r in index_files(db))

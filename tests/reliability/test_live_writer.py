"""Live-writer protection, on by default: the newest step, recently modified files and files
open in another process (found through /proc) are protected, with a reason the user sees.
``--force`` lifts the first two; an open file still needs a second, explicit confirmation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt_tui.procfs import open_files
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import Outcome

from .conftest import build_tree, files_on_disk, run_cli, scan, step_dir

HOLDER = "import sys; f = open(sys.argv[1], 'rb'); print('ready', flush=True); sys.stdin.read()"


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    procs: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        procs.append(p)
        return p

    yield hold
    for p in procs:
        p.communicate(timeout=10)  # closing stdin ends it


def _dry(root: Path, db: Path, *args: str) -> dict[str, object]:
    proc = run_cli(*args, "--dry-run", "--json", "--db", db)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _planned(plan: dict[str, object]) -> set[str]:
    return {f for s in plan["delete"] for f in s["files"]}  # type: ignore[attr-defined]


def _protected(plan: dict[str, object]) -> dict[str, str]:
    return {p["path"]: p["reason"] for p in plan["protected"]}  # type: ignore[attr-defined]


def test_newest_step_protected_unless_forced(tmp_path: Path) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200, 900, 1000), layers=2)
    newest = step_dir(root, "train_000", 1000)  # 1000 > 900: numeric, not string order
    plan = _dry(root, db, "rm", root, newest)
    assert not _planned(plan)
    reasons = _protected(plan)
    assert {str(p) for p in tree.files_of("train_000", 1000)} == set(reasons)
    assert all("newest step" in r for r in reasons.values())
    forced = _dry(root, db, "rm", root, newest, "--force")
    assert _planned(forced) == {str(p) for p in tree.files_of("train_000", 1000)}
    # Without --force, `rm --yes` leaves it on disk and says why: exit 1, every target protected
    proc = run_cli("rm", root, newest, "--yes", "--json", "--db", db)
    assert proc.returncode == 1 and "every target is protected" in proc.stderr
    assert all(p.exists() for p in tree.files_of("train_000", 1000))


def test_recent_files_protected_configurable_and_forced(tmp_path: Path) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200, 300), layers=2)
    fresh = tree.files_of("train_000", 200)[0]
    t = time.time() - 30
    os.utime(fresh, (t, t))  # written 30 s ago: "may still be written"
    plan = _dry(root, db, "prune", root, "--keep", "1")
    assert str(fresh) not in _planned(plan)
    assert "modified" in _protected(plan)[str(fresh)]
    assert str(tree.files_of("train_000", 200)[1]) in _planned(plan)
    # --recent 10: 30 s is old enough.
    assert str(fresh) in _planned(_dry(root, db, "prune", root, "--keep", "1", "--recent", "10"))
    # --force lifts it.
    assert str(fresh) in _planned(_dry(root, db, "prune", root, "--keep", "1", "--force"))
    proc = run_cli("prune", root, "--keep", "1", "--yes", "--json", "--db", db)
    assert proc.returncode == 0 and fresh.exists()


def test_procfs_finds_a_file_open_in_another_process(tmp_path: Path, holder: callable) -> None:  # type: ignore[valid-type]
    f = tmp_path / "x.safetensors"
    f.write_bytes(b"x")
    p = holder(f)
    st = f.stat()
    assert f"process {p.pid}" in open_files()[(st.st_dev, st.st_ino)]


async def test_open_file_needs_a_second_confirmation(tmp_path: Path, holder: callable) -> None:  # type: ignore[valid-type]
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200, 300), layers=2)
    busy = tree.files_of("train_000", 100)[0]
    p = holder(busy)
    # CLI: shown as protected with the holder's pid, even with --force; --yes does not delete it.
    plan = _dry(root, db, "prune", root, "--keep", "1", "--force")
    reason = _protected(plan)[str(busy)]
    assert f"process {p.pid}" in reason and "confirmation" in reason
    assert str(busy) not in _planned(plan)
    proc = run_cli("prune", root, "--keep", "1", "--yes", "--force", "--json", "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert busy.exists()
    assert files_on_disk(root) == {busy, *tree.newest_files()}
    async with await CheckpointService.open(str(db)) as svc:
        root_id = await scan(svc, root)
        plain = await svc.planner.plan_retention(root_id, 1, force=True)
        assert plain.empty and [x.needs_confirmation for x in plain.protected] == [True]
        # The second confirmation is explicit at both levels: a plan that includes it ...
        plan2 = await svc.planner.plan_retention(root_id, 1, force=True, include_open=True)
        assert [f.path_rel for f in plan2.files] == [str(busy.relative_to(root))]
        # ... still is not carried out without allow_open ...
        refused = await svc.execute(plan2)
        assert [r.outcome for r in refused.results] == [Outcome.FAILED]
        assert f"process {p.pid}" in (refused.results[0].error or "")
        assert busy.exists()
        # ... and goes with it.
        done = await svc.execute(plan2, allow_open=True)
        assert done.ok and not busy.exists()


async def test_an_inode_number_open_elsewhere_after_the_file_went_is_not_called_open(
    tmp_path: Path,
    holder: callable,  # type: ignore[valid-type]
) -> None:
    """Once a planned file is gone, its inode number can name another file that a process
    holds open (a recycled number: another program's database, say). Moving the file out of
    the step and holding it open elsewhere gives the same (dev, inode) deterministically.
    The plan must not call the gone file "open in process N" (it seemed protected and the
    run failed with exit 1), and the run must report it gone and leave the open file alone."""
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200, 300), layers=2)
    planned = tree.files_of("train_000", 100)[0]
    async with await CheckpointService.open(str(db)) as svc:
        root_id = await scan(svc, root)
        moved = tmp_path / "elsewhere.safetensors"
        planned.rename(moved)  # same inode, now outside the step
        p = holder(moved)
        plan = await svc.planner.plan_retention(root_id, 1)
        assert not any(f"process {p.pid}" in x.reason for x in plan.protected)
        assert str(planned.relative_to(root)) in [f.path_rel for f in plan.files]
        result = await svc.execute(plan)
    assert [r.path for r in result.already_gone] == [str(planned)]
    assert not result.failed, [r.error for r in result.failed]
    assert moved.is_file()
    assert files_on_disk(root) == set(tree.newest_files())

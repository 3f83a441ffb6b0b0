"""The remaining RELIABILITY.md rows: bad roots, mount points, FIFOs and leaf symlinks, hard
links out of the root, files replaced or added during deletion, a failing index commit,
2,000-deep directory chains and non-UTF-8 names.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ckpt_tui import fs
from ckpt_tui.db import engine as db_engine
from ckpt_tui.errors import CkptError
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import Outcome

from .conftest import (
    Victim,
    assert_consistent,
    assert_one_line_error,
    build_tree,
    files_on_disk,
    index_files,
    run_cli,
    scan,
    step_dir,
    write_ckpt,
)


@pytest.mark.parametrize("kind", ["slash", "symlink", "file", "missing"])
def test_bad_roots_are_refused_with_one_line(tmp_path: Path, kind: str) -> None:
    real = tmp_path / "real"
    build_tree(real, trainings=1, steps=(100, 200), layers=1)
    target = {
        "slash": Path("/"),
        "symlink": tmp_path / "link",
        "file": tmp_path / "f",
        "missing": tmp_path / "nope",
    }[kind]
    if kind == "symlink":
        target.symlink_to(real, target_is_directory=True)
    if kind == "file":
        target.write_text("x")
    before = files_on_disk(real)
    for cmd in (["scan", target], ["prune", target, "--keep", "1", "--yes", "--force"]):
        proc = run_cli(*cmd, "--db", tmp_path / "db.sqlite3")
        words = {
            "slash": "refusing to use /",
            "symlink": "symlink",
            "file": "not a directory",
            "missing": "does not exist",
        }[kind]
        assert_one_line_error(proc, words)
    assert files_on_disk(real) == before


async def test_mount_point_inside_the_root_is_refused(
    tmp_path: Path, victim: Victim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer directory on another device: nothing below it is deleted."""
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200), layers=2)
    mounted = step_dir(root, "train_000", 100) / "layer_0"
    mounted_ino = mounted.stat().st_ino
    real_fstat = os.fstat

    def fstat(fd: int) -> os.stat_result:
        # A real mount needs privileges and a device; report another st_dev instead.
        st = real_fstat(fd)
        if st.st_ino == mounted_ino:
            fields = list(st)
            fields[2] = st.st_dev + 1
            return os.stat_result(fields)
        return st

    async with await CheckpointService.open(str(db)) as svc:
        root_id = await scan(svc, root)
        plan = await svc.plan_retention(root_id, 1, force=True)
        monkeypatch.setattr(fs.os, "fstat", fstat)
        result = await svc.execute(plan)
        monkeypatch.undo()
    inside = mounted / "checkpoint.safetensors"
    assert inside.exists()
    failed = {r.path: r.error for r in result.failed}
    assert "mount point" in (failed[str(inside)] or "")
    assert not (step_dir(root, "train_000", 100) / "layer_1").exists()
    assert files_on_disk(root) == {inside, *tree.newest_files()}
    assert next(r for r in index_files(db) if r.path == inside).error


def test_fifo_and_leaf_symlink_in_a_step(tmp_path: Path, victim: Victim) -> None:
    """Never followed, never opened (no hang: the subprocess timeout), link removed as a link.

    A symlink beside the layer folders is a foreign file of the step: kept and named until
    the user asks for foreign files too (``--include-foreign``); then it goes as a link."""
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200), layers=1)
    step = step_dir(root, "train_000", 100)
    os.mkfifo(step / "layer_0" / "pipe.safetensors")
    link = step / "link.safetensors"
    link.symlink_to(victim.path / "checkpoint.safetensors")
    real = tree.files_of("train_000", 100)[0]
    real_size = real.stat().st_size
    assert run_cli("scan", root, "--db", db, timeout=30).returncode == 0
    proc = run_cli(
        "prune", root, "--keep", "1", "--yes", "--json", "--db", db, "--force", timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    victim.assert_intact()
    out = json.loads(proc.stdout)
    assert [d["path"] for d in out["deleted"]] == [str(real)]
    assert out["freed_bytes"] == real_size
    assert [f["path"] for f in out["foreign"]] == [str(link)] and link.is_symlink()
    fifo = step / "layer_0" / "pipe.safetensors"
    assert [p["path"] for p in out["protected"]] == [str(fifo)]
    assert fifo.exists()  # a FIFO is never deleted
    proc = run_cli(
        "prune",
        root,
        "--keep",
        "1",
        "--yes",
        "--json",
        "--db",
        db,
        "--force",
        "--include-foreign",
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    victim.assert_intact()
    out = json.loads(proc.stdout)
    assert not link.is_symlink() and not link.exists()
    # The link went as a link: the victim's bytes are not counted as freed.
    assert {d["path"]: d["size_bytes"] for d in out["deleted"]} == {str(link): 0}
    assert out["freed_bytes"] == 0
    assert fifo.exists() and (step / "layer_0").is_dir()  # the FIFO stopped the climb


def test_hard_link_to_a_file_outside_the_root(tmp_path: Path, victim: Victim) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200), layers=2)
    linked = tree.files_of("train_000", 100)[0]
    linked.unlink()
    os.link(victim.path / "checkpoint.safetensors", linked)
    other = tree.files_of("train_000", 100)[1]
    assert run_cli("scan", root, "--db", db).returncode == 0
    proc = run_cli("prune", root, "--keep", "1", "--yes", "--json", "--db", db, "--force")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    victim.assert_intact()
    assert not linked.exists()
    assert (victim.path / "checkpoint.safetensors").stat().st_nlink == 1
    sizes = {d["path"]: d["size_bytes"] for d in out["deleted"]}
    assert sizes[str(linked)] == 0, "bytes of a file that lives on were counted as freed"
    assert sizes[str(other)] > 0
    assert out["freed_bytes"] == sizes[str(other)]


async def test_file_replaced_after_the_scan_survives_and_is_reported(tmp_path: Path) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200), layers=2)
    replaced = tree.files_of("train_000", 100)[0]
    async with await CheckpointService.open(str(db)) as svc:
        root_id = await scan(svc, root)
        plan = await svc.plan_retention(root_id, 1, force=True)
        tmp = replaced.with_suffix(".tmp")
        write_ckpt(tmp)
        os.replace(tmp, replaced)  # a new inode under the same name, as a writer's rename does
        result = await svc.execute(plan)
    assert replaced.exists()
    bad = [r for r in result.results if r.path == str(replaced)]
    assert (
        bad
        and bad[0].outcome == Outcome.CHANGED
        and "changed since the scan" in (bad[0].error or "")
    )
    assert not result.ok
    assert not tree.files_of("train_000", 100)[1].exists()
    assert_consistent(db, root)


async def test_new_file_appearing_during_deletion_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    build_tree(root, trainings=1, steps=(100, 200), layers=2)
    layer = step_dir(root, "train_000", 100) / "layer_1"
    new = layer / "late.safetensors"
    real_unlink = os.unlink

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        if not new.exists():  # a writer adds a file to the step while we delete it
            new.write_bytes(b"written during the prune")
        real_unlink(path, dir_fd=dir_fd)

    async with await CheckpointService.open(str(db)) as svc:
        root_id = await scan(svc, root)
        plan = await svc.plan_retention(root_id, 1, force=True)
        monkeypatch.setattr(fs.os, "unlink", unlink)
        result = await svc.execute(plan)
        monkeypatch.undo()
    assert result.ok and len(result.deleted) == 2
    assert new.read_bytes() == b"written during the prune"
    assert not (layer.parent / "layer_0").exists()  # the emptied sibling still went


@pytest.mark.parametrize("how", ["disk-full", "locked"])
async def test_index_commit_failing_deletes_nothing(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    build_tree(root, trainings=1, steps=(100, 200, 300), layers=2)
    monkeypatch.setattr(db_engine, "BUSY_TIMEOUT_MS", 200)  # fail fast when locked
    async with await CheckpointService.open(str(db)) as svc:
        root_id = await scan(svc, root)
        plan = await svc.plan_retention(root_id, 1, force=True)
        before = files_on_disk(root)
        holder = None
        if how == "locked":
            holder = sqlite3.connect(db, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        else:
            from sqlalchemy.exc import OperationalError
            from sqlalchemy.ext.asyncio import AsyncSession

            real_execute = AsyncSession.execute

            async def execute(self: AsyncSession, stmt: Any, *a: Any, **k: Any) -> Any:
                # ENOSPC for the index: produced by raising from the claim's UPDATE.
                if getattr(stmt, "is_update", False):
                    raise OperationalError(
                        "UPDATE", {}, sqlite3.OperationalError("database or disk is full")
                    )
                return await real_execute(self, stmt, *a, **k)

            monkeypatch.setattr(AsyncSession, "execute", execute)
        try:
            with pytest.raises(CkptError, match="nothing was deleted"):
                await svc.execute(plan)
        finally:
            if holder is not None:
                holder.execute("ROLLBACK")
                holder.close()
            monkeypatch.undo()
    assert files_on_disk(root) == before
    assert all(r.state == "active" for r in index_files(db))


def _deep_chain(base: Path, depth: int, leaf: str | bytes) -> None:
    """mkdir a chain deeper than PATH_MAX allows as a string, one level at a time via fds."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.mkdir(leaf, dir_fd=fd)
    finally:
        os.close(fd)


def _rm_chain(base: Path) -> None:
    """Remove the chain iteratively (shutil.rmtree recurses per level)."""
    fds = [os.open(base, os.O_RDONLY | os.O_DIRECTORY)]
    while True:
        try:
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        except FileNotFoundError:
            break
    while len(fds) > 1:
        fd = fds.pop()
        for name in os.listdir(fd):
            os.rmdir(name, dir_fd=fd)
        os.close(fd)
        os.rmdir("d", dir_fd=fds[-1])
    os.close(fds[0])


def test_deep_chain_and_non_utf8_names_scan_with_notes(tmp_path: Path) -> None:
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200), layers=1)
    (root / "deep").mkdir()
    _deep_chain(root / "deep", 2000, "checkpoint_5")
    step = step_dir(root, "train_000", 100)
    os.mkdir(os.fsencode(step) + b"/layer_\xff")
    with open(os.fsencode(step) + b"/layer_0/\xfe.safetensors", "wb") as f:
        f.write(b"not utf-8 named")
    os.mkdir(os.fsencode(root) + b"/train_\xfd")
    try:
        proc = run_cli("scan", root, "--db", db, "--json", timeout=60)
        assert proc.returncode == 0 and "RecursionError" not in proc.stderr, proc.stderr
        notes = json.loads(proc.stdout)["notes"]
        assert any("not UTF-8" in n for n in notes)
        assert any("deeper than" in n for n in notes)
        listing = run_cli("ls", root, "--db", db, "--json")
        assert listing.returncode == 0 and "Traceback" not in listing.stderr
        # A prune leaves the unindexed names (and so their directories) alone.
        pr = run_cli("prune", root, "--keep", "1", "--yes", "--json", "--db", db, "--force")
        assert pr.returncode == 0, pr.stderr
        assert os.path.exists(os.fsencode(step) + b"/layer_0/\xfe.safetensors")
        assert not tree.files_of("train_000", 100)[0].exists()
    finally:
        _rm_chain(root / "deep")


@pytest.mark.slow
def test_100k_files_in_one_directory_are_walked_past_quickly(tmp_path: Path) -> None:
    """A directory of 100,000 files beside the trainings (a dataset shard dump, say) is walked
    past without a stat per file; the steps are still found and nothing in it is indexed."""
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    build_tree(root, trainings=1, steps=(100, 200), layers=1)
    crowd = root / "crowd"
    crowd.mkdir()
    fd = os.open(crowd, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(100_000):
            os.close(os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    proc = run_cli("scan", root, "--db", db, "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["steps"], doc["files"]) == (2, 2)

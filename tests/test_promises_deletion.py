"""README "Safety" promises 1 and 3, and the cancel contract, each with a test that fails when
the promise breaks (each was a surviving mutation or an unchecked promise, issue 14).

Real files (written with the ``safetensors`` library) in ``tmp_path``, a real SQLite index,
the real service. Oracles are the disk (``os.stat``, file contents) and the index read with
``sqlite3``, never the plan that produced the deletion. Where an OS call is wrapped, the test
says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from ckpt_tui import fs
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import Outcome
from tests.conftest import make_training

LAYERS = ("layer_0", "layer_1", "layer_2")


def _tree(tmp_path: Path, steps: tuple[int, ...] = (100, 200, 300)) -> tuple[Path, Path]:
    root = tmp_path / "root"
    make_training(root, "t", steps, layers=LAYERS)
    return root, root / "t" / "checkpoints"


def _files(ck: Path, step: int) -> list[Path]:
    return [ck / f"checkpoint_{step}" / layer / "checkpoint.safetensors" for layer in LAYERS]


def _rows(db: Path) -> dict[str, tuple[str, str | None]]:
    """relpath within the step -> (state, error), read with sqlite3, not the code under test."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT s.relpath, f.relpath, f.state, f.error FROM files f "
            "JOIN steps s ON s.id = f.step_id"
        ).fetchall()
    finally:
        con.close()
    return {f"{s}/{f}": (state, err) for s, f, state, err in rows}


async def _open_scan(db: Path, root: Path) -> tuple[CheckpointService, int]:
    svc = await CheckpointService.open(str(db))
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    return svc, info.id


async def _plan_step(svc: CheckpointService, root_id: int, step: int) -> Any:
    training = (await svc.trainings(root_id))[0]
    sid = next(s.id for s in await svc.steps(training.id) if s.step == step)
    return await svc.plan_steps(root_id, [sid], force=True)


# ---------------------------------------------------------------------------- promise 1


async def test_file_rewritten_in_place_with_same_size_and_inode_survives_by_its_mtime(
    tmp_path: Path,
) -> None:
    """Only the mtime tells this file changed: same inode (rewritten in place), same size.
    It must survive, be reported CHANGED, and keep its row with the reason."""
    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    svc, root_id = await _open_scan(db, root)
    try:
        plan = await _plan_step(svc, root_id, 100)
        target, *others = _files(ck, 100)
        before = target.stat()
        new_bytes = bytes(b ^ 0xFF for b in target.read_bytes())  # same length, new content
        with open(target, "r+b") as f:  # in place: the inode stays
            f.write(new_bytes)
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
        after = target.stat()
        assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
        assert after.st_mtime_ns != before.st_mtime_ns
        result = await svc.execute(plan)
    finally:
        await svc.close()
    assert target.read_bytes() == new_bytes, "a file changed since the scan was deleted"
    by_path = {r.path: r for r in result.results}
    assert by_path[str(target)].outcome == Outcome.CHANGED
    assert by_path[str(target)].error == "changed since the scan; left alone"
    assert [r.path for r in result.changed] == [str(target)]
    assert not result.ok
    assert all(not p.exists() for p in others)
    assert {r.path for r in result.deleted} == {str(p) for p in others}
    state, error = _rows(db)[f"t/checkpoints/checkpoint_100/{LAYERS[0]}/checkpoint.safetensors"]
    assert (state, error) == ("active", "changed since the scan; left alone")
    assert (ck / "checkpoint_100" / LAYERS[0]).is_dir()


def test_cli_reports_the_mtime_only_change_with_exit_code_1(tmp_path: Path) -> None:
    """The same through the CLI contract: ``changed`` names it, exit code 1 (an item failed)."""
    from tests.reliability.conftest import run_cli

    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    assert run_cli("scan", root, "--db", db).returncode == 0
    target = _files(ck, 100)[0]
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # one nanosecond later
    proc = run_cli("rm", root, ck / "checkpoint_100", "--yes", "--json", "--db", db)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [c["path"] for c in doc["changed"]] == [str(target)]
    assert target.exists()
    assert sorted(d["path"] for d in doc["deleted"]) == sorted(map(str, _files(ck, 100)[1:]))


async def test_file_that_appeared_in_a_step_since_the_scan_is_kept(tmp_path: Path) -> None:
    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    svc, root_id = await _open_scan(db, root)
    try:
        plan = await _plan_step(svc, root_id, 100)
        late = ck / "checkpoint_100" / LAYERS[1] / "late.safetensors"
        late.write_bytes(b"written after the scan")
        notes = ck / "checkpoint_100" / "notes.txt"
        notes.write_text("a note written after the scan\n")
        result = await svc.execute(plan)
    finally:
        await svc.close()
    assert late.read_bytes() == b"written after the scan"
    assert notes.read_text() == "a note written after the scan\n"
    assert {r.path for r in result.deleted} == {str(p) for p in _files(ck, 100)}
    # Its folders stay (rmdir-if-empty); the emptied sibling layers went.
    assert sorted(p.name for p in (ck / "checkpoint_100").iterdir()) == [LAYERS[1], "notes.txt"]


def test_file_that_appeared_in_a_step_since_the_scan_is_reported(tmp_path: Path) -> None:
    from tests.reliability.conftest import run_cli

    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    assert run_cli("scan", root, "--db", db).returncode == 0
    late = ck / "checkpoint_100" / LAYERS[1] / "late.safetensors"
    late.write_bytes(b"written after the scan")
    proc = run_cli("rm", root, ck / "checkpoint_100", "--force", "--yes", "--json", "--db", db)
    assert late.exists()
    assert str(late) in proc.stdout, "the JSON result does not name the file it left alone"
    human = run_cli("rm", root, ck / "checkpoint_100", "--force", "--yes", "--db", db)
    assert str(late) in human.stdout + human.stderr


# ---------------------------------------------------------------------------- cancel


async def test_cancel_during_a_step_stops_before_the_next_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Esc "after the current file": cancel set while the first file is being unlinked; the
    other files of the same step must survive and the result says cancelled.

    The cancel is set from a wrapper of ``os.unlink`` right after the first real unlink,
    not from the progress callback: the deleting thread hands progress to the event loop in
    bundles (at most every 50 ms) and does not wait for it, so "the callback has seen the
    first file" is no fixed point in the thread's work. The wrapper only observes and times
    the user's key press; the unlink itself is real."""
    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    cancel = threading.Event()
    real_unlink = os.unlink
    calls: list[str] = []

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        real_unlink(path, dir_fd=dir_fd)
        calls.append(os.fsdecode(path))
        cancel.set()  # the user presses Esc while this file goes

    seen: list[Outcome] = []
    svc, root_id = await _open_scan(db, root)
    try:
        plan = await _plan_step(svc, root_id, 100)
        assert plan.file_count == 3
        monkeypatch.setattr(fs.os, "unlink", unlink)
        result = await svc.execute(
            plan, lambda p: seen.append(p.item.outcome) if p.item else None, cancel
        )
        monkeypatch.undo()
    finally:
        await svc.close()
    first, *rest = _files(ck, 100)
    assert calls == ["checkpoint.safetensors"], "kept unlinking after the cancel"
    assert not first.exists() and all(p.exists() for p in rest)
    assert result.cancelled and not result.ok
    assert [r.path for r in result.deleted] == [str(first)]
    skipped = [r for r in result.results if r.outcome == Outcome.SKIPPED]
    assert sorted(r.path for r in skipped) == sorted(map(str, rest))
    assert {r.error for r in skipped} == {"cancelled"}
    assert seen[:1] == [Outcome.DELETED]
    rows = _rows(db)
    assert all(
        rows[f"t/checkpoints/checkpoint_100/{layer}/checkpoint.safetensors"] == ("active", None)
        for layer in LAYERS[1:]
    )
    assert f"t/checkpoints/checkpoint_100/{LAYERS[0]}/checkpoint.safetensors" not in rows


# ---------------------------------------------------------------------------- promise 3


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("shape", ["layer", "step"])
async def test_directory_swapped_for_a_symlink_before_the_deletion_starts(
    tmp_path: Path, shape: str
) -> None:
    """The swap lands between planning and execute, before the deleter opens any directory
    fd, so fd pinning cannot help: only ``O_NOFOLLOW`` stops the open of the swapped name.

    The victim is a hard-link backup of the step (``cp -al`` style, made before the scan):
    the same inodes, sizes and mtimes as the planned files, so the identity check before
    unlink cannot tell them apart either. Following the symlink would unlink the backup's
    names; the test checks they are all still there."""
    root, ck = _tree(tmp_path)
    step = ck / "checkpoint_100"
    backup = tmp_path / "backup" / "checkpoint_100"
    for layer in LAYERS:
        (backup / layer).mkdir(parents=True)
        os.link(step / layer / "checkpoint.safetensors", backup / layer / "checkpoint.safetensors")
    victims = {p: _digest(p) for p in backup.rglob("*.safetensors")}
    assert len(victims) == 3
    db = tmp_path / "index.sqlite3"
    svc, root_id = await _open_scan(db, root)
    try:
        plan = await _plan_step(svc, root_id, 100)
        assert plan.file_count == 3
        # The swap: the real directory moves aside, a symlink to the backup takes its name.
        if shape == "layer":
            swapped, target = step / LAYERS[0], backup / LAYERS[0]
        else:
            swapped, target = step, backup
        swapped.rename(swapped.with_name(swapped.name + ".moved"))
        swapped.symlink_to(target, target_is_directory=True)
        result = await svc.execute(plan)
    finally:
        await svc.close()
    assert {p: _digest(p) for p in backup.rglob("*.safetensors") if p.exists()} == victims, (
        "a deletion was redirected through the swapped-in symlink"
    )
    moved = swapped.with_name(swapped.name + ".moved")
    assert moved.is_dir() and any(moved.rglob("checkpoint.safetensors")), (
        "the real files behind the swap are untouched: nothing reached them either"
    )
    assert swapped.is_symlink()
    refused = [r for r in result.results if r.outcome == Outcome.FAILED]
    redirected = (
        [str(swapped / "checkpoint.safetensors")]
        if shape == "layer"
        else [str(step / layer / "checkpoint.safetensors") for layer in LAYERS]
    )
    assert sorted(r.path for r in refused) == sorted(redirected)
    assert {r.error for r in refused} == {
        "a directory on its path is now a symlink or not a directory; refused"
    }
    assert not result.ok
    if shape == "layer":  # the layers that were not swapped went as planned
        assert {r.path for r in result.deleted} == {
            str(step / layer / "checkpoint.safetensors") for layer in LAYERS[1:]
        }
    else:
        assert result.deleted == ()


# ---------------------------------------------------------------------------- per-file faults


async def test_file_replaced_by_a_symlink_is_left_alone_as_a_type_change(tmp_path: Path) -> None:
    """The scanned regular file became a symlink to a file elsewhere: never followed (the stat
    does not follow it), never unlinked, reported with the type change."""
    root, ck = _tree(tmp_path)
    elsewhere = tmp_path / "elsewhere.safetensors"
    elsewhere.write_bytes(b"precious")
    db = tmp_path / "index.sqlite3"
    svc, root_id = await _open_scan(db, root)
    try:
        plan = await _plan_step(svc, root_id, 100)
        target = _files(ck, 100)[0]
        target.unlink()
        target.symlink_to(elsewhere)
        result = await svc.execute(plan)
    finally:
        await svc.close()
    assert target.is_symlink() and elsewhere.read_bytes() == b"precious"
    r = next(r for r in result.results if r.path == str(target))
    assert (r.outcome, r.error) == (Outcome.CHANGED, "changed type since the scan; left alone")
    assert _rows(db)[f"t/checkpoints/checkpoint_100/{LAYERS[0]}/checkpoint.safetensors"] == (
        "active",
        "changed type since the scan; left alone",
    )


async def test_refused_unlink_keeps_the_row_with_the_os_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root ignores permission bits, so EACCES is produced by making ``os.unlink`` raise."""
    import errno

    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    target, *others = _files(ck, 100)
    real_unlink = os.unlink

    def unlink(path: Any, *, dir_fd: int | None = None) -> None:
        if dir_fd is not None and os.readlink(f"/proc/self/fd/{dir_fd}") == str(target.parent):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        real_unlink(path, dir_fd=dir_fd)

    svc, root_id = await _open_scan(db, root)
    try:
        plan = await _plan_step(svc, root_id, 100)
        monkeypatch.setattr(fs.os, "unlink", unlink)
        result = await svc.execute(plan)
        monkeypatch.undo()
    finally:
        await svc.close()
    assert target.exists() and not any(p.exists() for p in others)
    r = next(r for r in result.results if r.path == str(target))
    assert (r.outcome, r.error) == (Outcome.FAILED, "Permission denied (EACCES)")
    assert [x.path for x in result.failed] == [str(target)]
    assert _rows(db)[f"t/checkpoints/checkpoint_100/{LAYERS[0]}/checkpoint.safetensors"] == (
        "active",
        "Permission denied (EACCES)",
    )


async def test_io_error_on_stat_stops_the_batch_with_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing disk (EIO) cannot be produced on demand: ``os.stat`` is made to raise it for
    the second file. Nothing after it is touched; the message names the file."""
    import errno

    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    first, second, third = _files(ck, 100)
    real_stat = os.stat

    def stat(path: Any, *a: Any, dir_fd: int | None = None, **kw: Any) -> os.stat_result:
        if dir_fd is not None and os.readlink(f"/proc/self/fd/{dir_fd}") == str(second.parent):
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fsdecode(path))
        if dir_fd is None:
            return real_stat(path, *a, **kw)
        return real_stat(path, *a, dir_fd=dir_fd, **kw)

    svc, root_id = await _open_scan(db, root)
    try:
        plan = await _plan_step(svc, root_id, 100)
        monkeypatch.setattr(fs.os, "stat", stat)
        result = await svc.execute(plan)
        monkeypatch.undo()
    finally:
        await svc.close()
    assert result.stopped == (
        f"stopped: {second}: Input/output error; nothing after it was touched, run again to resume"
    )
    assert not first.exists() and second.exists() and third.exists()
    assert [r.path for r in result.deleted] == [str(first)]

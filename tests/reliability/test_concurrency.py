"""Two deleters at once, and a training that keeps writing while a prune runs.

The first prune runs through _runner.py with a slow unlink (a slow disk) and logs every
unlink with its pid, so "each file deleted once, by one process" is checked directly.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckpt_tui.deletion import deletion_lock
from ckpt_tui.errors import IndexBusy
from ckpt_tui.service import CheckpointService

from .conftest import (
    assert_consistent,
    build_tree,
    files_on_disk,
    index_files,
    popen_cli,
    run_cli,
    scan,
)

STEPS40 = tuple(100 * (i + 1) for i in range(40))


def _wait_for(cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _unlinks(log: Path, root: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        pid, path = line.split(" ", 1)
        if path.startswith(str(root)):
            out.append((int(pid), path))
    return out


class Gate:
    """The other half of _runner.py's CKPT_FAULT_UNLINK_GATE handshake: the deleter creates
    ``holding`` right before its N-th unlink and waits (holding its locks) for ``release``."""

    def __init__(self, path: Path, nth: int = 1) -> None:
        path.mkdir()
        self.path, self.spec = path, f"{path}:{nth}"

    def wait_holding(self, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.path / "holding").exists():
            assert proc.poll() is None, f"the deleter ended first: {proc.communicate()}"
            assert time.monotonic() < deadline, "the deleter never reached the gate"
            time.sleep(0.01)

    def release(self) -> None:
        (self.path / "release").touch()


@pytest.mark.slow
def test_two_processes_same_prune_second_is_told_busy(tmp_path: Path) -> None:
    root, db, log = tmp_path / "root", tmp_path / "index.sqlite3", tmp_path / "unlinks.log"
    tree = build_tree(root, trainings=10, steps=STEPS40, layers=3)  # > one claim batch
    assert run_cli("scan", root, "--db", db).returncode == 0
    args = ("prune", root, "--keep", "1", "--yes", "--json", "--db", db)
    gate = Gate(tmp_path / "gate", nth=6)  # the first stops before its 6th unlink
    first = popen_cli(*args, unlink_log=str(log), unlink_gate=gate.spec)
    try:
        gate.wait_holding(first)
        assert len(_unlinks(log, root)) == 5
        # However long the second takes to start, the first is mid-deletion meanwhile.
        second = run_cli(*args, unlink_log=str(log))
    finally:
        gate.release()
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    # The second is told, in one line, and does nothing else.
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    lines = second.stderr.strip().splitlines()
    assert "busy" in lines[-1] and all(ln.startswith("ckpt-tui: ") for ln in lines), lines
    unlinks = _unlinks(log, root)
    assert {pid for pid, _ in unlinks} == {first.pid}, "the second process unlinked something"
    counts = collections.Counter(p for _, p in unlinks)
    assert max(counts.values()) == 1, "a file was unlinked twice"
    assert len(json.loads(out1)["deleted"]) == len(unlinks) == 10 * 39 * 3
    assert files_on_disk(root) == set(tree.newest_files())
    assert_consistent(db, root)


def test_second_process_told_busy_even_when_everything_is_claimed(tmp_path: Path) -> None:
    """The first deleter has claimed every row and holds its lock (a handshake, not a sleep,
    keeps it there): the second plans nothing and must still say "busy", exit 1, delete
    nothing."""
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    tree = build_tree(root, trainings=1, steps=(100, 200, 300), layers=2)
    assert run_cli("scan", root, "--db", db).returncode == 0
    args = ("prune", root, "--keep", "1", "--yes", "--json", "--db", db)
    gate = Gate(tmp_path / "gate")
    first = popen_cli(*args, unlink_gate=gate.spec)
    try:
        gate.wait_holding(first)
        assert sum(r.state == "deleting" for r in index_files(db)) == 4
        before = files_on_disk(root)
        second = run_cli(*args)
        assert files_on_disk(root) == before
    finally:
        gate.release()
    out1, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert second.returncode == 1, second.stderr
    assert "busy" in second.stderr and "Traceback" not in second.stderr
    assert len(json.loads(out1)["deleted"]) == 4
    assert files_on_disk(root) == set(tree.newest_files())
    assert_consistent(db, root)


async def test_same_plan_while_another_holds_the_lock_deletes_nothing(tmp_path: Path) -> None:
    """In-process: the lock is an flock on its own open file, so it excludes us too."""
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    build_tree(root, trainings=1, steps=(100, 200, 300), layers=2)
    async with await CheckpointService.open(str(db)) as svc:
        root_id = await scan(svc, root)
        plan = await svc.plan_retention(root_id, 1, force=True)
        before = files_on_disk(root)
        with deletion_lock(svc.db), pytest.raises(IndexBusy, match="busy"):
            await svc.execute(plan)
        assert files_on_disk(root) == before
        assert all(r.state == "active" for r in index_files(db))
        result = await svc.execute(plan)  # once free, the same plan runs
        assert result.ok and len(result.deleted) == 4
        again = await svc.execute(plan)  # and a second run of it deletes nothing twice
        assert not again.deleted and not again.freed_bytes
    assert_consistent(db, root)


WRITER = r"""
import os, sys, time
root, log, stop = sys.argv[1], sys.argv[2], sys.argv[3]
trainings = sys.argv[4:]
i = 0
with open(log, "a") as out:
    while not os.path.exists(stop) or i < 30:
        t = trainings[i % len(trainings)]
        ck = os.path.join(root, t, "checkpoints")
        targets = [
            os.path.join(ck, f"checkpoint_{100 * (1 + i % 20)}", "layer_0", f"extra_{i}.bin"),
            os.path.join(ck, f"checkpoint_{100 * (1 + i % 20)}", f"layer_{9 + i}", "w.bin"),
            os.path.join(ck, f"checkpoint_{50000 + i}", "layer_0", "checkpoint.safetensors"),
        ]
        for path in targets:
            for _ in range(50):  # a racing rmdir can remove a dir between mkdir and open
                try:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(b"new data %d" % i)
                    break
                except FileNotFoundError:
                    continue
            else:
                continue
            out.write(path + "\n")
            out.flush()
        i += 1
        time.sleep(0.002)
"""


@pytest.mark.slow
def test_writer_adding_files_while_a_prune_runs(tmp_path: Path) -> None:
    root, db, log = tmp_path / "root", tmp_path / "index.sqlite3", tmp_path / "unlinks.log"
    written, stop = tmp_path / "written.log", tmp_path / "stop"
    tree = build_tree(root, trainings=4, steps=tuple(100 * (i + 1) for i in range(20)), layers=2)
    assert run_cli("scan", root, "--db", db).returncode == 0
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(written), str(stop), *tree.trainings]
    )
    try:
        _wait_for(lambda: written.exists() and written.read_text().count("\n") >= 6)
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
            unlink_sleep="0.003",
            unlink_log=str(log),
        )
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert proc.returncode == 0, proc.stderr
    new = [Path(p) for p in written.read_text().splitlines()]
    assert len(new) >= 90
    missing = [p for p in new if not p.exists()]
    assert not missing, f"files the writer wrote were deleted: {missing[:5]}"
    deleted = {p for _, p in _unlinks(log, root)}
    assert not deleted & {str(p) for p in new}
    # Everything scanned and old is gone; directories holding new files stayed.
    scanned_old = set(tree.all_files()) - set(tree.newest_files())
    assert not [p for p in scanned_old if p.exists()]
    assert len(deleted) == len(scanned_old)
    assert not [r for r in index_files(db) if r.state != "active"]

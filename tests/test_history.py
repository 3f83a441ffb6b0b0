"""Deletion history: each kind of run leaves exactly the record a person would ask for, and
the recorded bytes equal the command's own result and the filesystem's change."""

from __future__ import annotations

import errno
import getpass
import json
import os
import socket
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from ckpt_tui import fs
from ckpt_tui.cli import main
from ckpt_tui.deletion import Deleter
from ckpt_tui.history import RunContext
from ckpt_tui.planning import Protection
from ckpt_tui.service import CheckpointService

from .conftest import make_training


def cli(*args: str, db: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--db", db], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def apparent(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture
def db(any_db: str) -> str:  # every test here runs on SQLite and, in CI, on PostgreSQL
    return any_db


def test_a_prune_is_recorded_with_who_what_and_what_it_freed(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200, 300], layers=("layer_0", "layer_1"))
    (ck / "checkpoint_100" / "notes.txt").write_text("keep me\n")
    before = apparent(root)
    code, out, err = cli("prune", str(root), "--keep", "1", "--yes", "--json", db=db)
    assert code == 0, err
    result = json.loads(out)
    code, out, _ = cli("history", str(root), "--json", db=db)
    assert code == 0
    doc = json.loads(out)
    assert doc["root"] == str(root)
    (run,) = doc["runs"]
    assert (run["user"], run["host"], run["face"]) == (
        getpass.getuser(),
        socket.gethostname(),
        "cli",
    )
    assert "prune" in run["command"] and "--keep 1" in run["command"]
    assert run["rules"]["keep"] == 1 and run["rules"]["include_foreign"] is False
    assert run["outcome"] == "finished" and run["finished_at"] >= run["started_at"]
    assert run["freed_bytes"] == result["freed_bytes"] == before - apparent(root) > 0
    assert run["freed_disk_bytes"] == result["freed_disk_bytes"]
    assert run["planned_files"] == run["freed_files"] == 4
    steps = {s["path"]: s for s in run["steps"]}
    assert steps["run/checkpoints/checkpoint_100"]["result"] == "kept: foreign files"
    assert steps["run/checkpoints/checkpoint_200"]["result"] == "deleted"
    assert steps["run/checkpoints/checkpoint_200"]["files_deleted"] == 2
    # the text form: one line per run
    code, out, _ = cli("history", str(root), db=db)
    lines = out.splitlines()
    assert len(lines) == 2 and "@" in lines[1] and "finished" in lines[1]
    # --step answers "what happened to this step"
    code, out, _ = cli("history", str(root), "--step", str(ck / "checkpoint_200"), "--json", db=db)
    (only,) = json.loads(out)["runs"]
    assert [s["path"] for s in only["steps"]] == ["run/checkpoints/checkpoint_200"]


def test_protected_steps_a_rule_asked_for_are_recorded_with_the_reason(
    tmp_path: Path, db: str
) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=("layer_0",))
    code, _, err = cli(
        "rm", str(root), str(ck / "checkpoint_100"), str(ck / "checkpoint_200"), "--yes", db=db
    )
    assert code == 0, err
    code, out, _ = cli("history", str(root), "--json", db=db)
    steps = {s["path"]: s["result"] for s in json.loads(out)["runs"][0]["steps"]}
    assert steps["run/checkpoints/checkpoint_100"] == "deleted"
    assert steps["run/checkpoints/checkpoint_200"].startswith("protected: newest step")


async def test_a_failing_file_is_recorded_with_its_error(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    make_training(root, "run", [100, 200], layers=("layer_0", "layer_1"))
    real = fs.os.unlink

    def unlink(name: str, *, dir_fd: int | None = None) -> None:
        # root ignores permission bits: make the OS call fail as it would for a user
        if dir_fd is not None and name == "checkpoint.safetensors" and unlink.calls == 0:
            unlink.calls += 1
            raise PermissionError(errno.EACCES, "Permission denied", name)
        real(name, dir_fd=dir_fd)

    unlink.calls = 0  # type: ignore[attr-defined]
    monkeypatch.setattr(fs.os, "unlink", unlink)
    async with await CheckpointService.open(db) as svc:
        info = await svc.indexed_root(str(root))
        plan = await svc.plan_retention(info.id, 1)
        result = await svc.execute(plan, ctx=RunContext("api", "test"))
        (run,) = await svc.history(str(root))
    assert len(result.failed) == 1
    (step,) = run.steps
    assert step.result == "partly deleted" and step.files_deleted == 1
    assert [e["error"] for e in step.errors] == ["Permission denied (EACCES)"]
    assert run.freed_bytes == result.freed_bytes > 0


async def test_a_cancelled_run_is_recorded_as_cancelled(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    # more files than the first batch claims: the cancel lands before the second batch
    make_training(root, "run", range(1, 41), layers=("layer_0", "layer_1"))
    cancel = threading.Event()
    async with await CheckpointService.open(db) as svc:
        info = await svc.indexed_root(str(root))
        plan = await svc.plan_retention(info.id, 1)
        # cancelled from the progress callback once the first file is gone
        result = await svc.execute(plan, lambda _p: cancel.set(), cancel)
        (run,) = await svc.history(str(root))
    assert result.cancelled and run.outcome == "cancelled"
    assert run.freed_files == len(result.deleted) < plan.file_count
    # steps of batches never started are not recorded; those recorded went whole
    assert sum(s.files_deleted for s in run.steps) == run.freed_files


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing after it runs in the deleter."""


async def test_a_killed_run_is_linked_to_the_run_that_finishes_it(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    make_training(root, "run", [1, 2, 3], layers=("layer_0", "layer_1"))
    before = apparent(root)
    async with await CheckpointService.open(db, protection=Protection(recent_seconds=0)) as svc:
        info = await svc.indexed_root(str(root))
        plan = await svc.plan_retention(info.id, 1)

        async def die(*_a: object, **_k: object) -> None:
            raise Killed

        monkeypatch.setattr(Deleter, "_finish", die)  # after the unlinks, before the index
        with pytest.raises(Killed):
            await svc.execute(plan)
        monkeypatch.undo()
        (dead,) = await svc.history(str(root))
        assert dead.outcome == "running" and dead.finished_at is None
        assert await svc.interrupted() is not None
        # the next deleting run (nothing new to delete) finishes it and links itself
        again = await svc.plan_retention(info.id, 1)
        done = await svc.execute(again, ctx=RunContext("cli", "again"))
        runs = await svc.history(str(root))
    assert done.recovered > 0
    newest, old = runs
    assert (old.outcome, old.finished_by) == ("interrupted", newest.id)
    assert newest.outcome == "finished"
    assert sum(s.files_deleted for s in old.steps) == old.freed_files == 4
    assert old.freed_bytes == before - apparent(root) > 0, "the killed run's unlinks"
    assert {s.result for s in old.steps} == {"deleted"}
    assert await_paths_gone(root)


def await_paths_gone(root: Path) -> bool:
    ck = root / "run" / "checkpoints"
    return sorted(p.name for p in ck.iterdir()) == ["checkpoint_3"]


def test_forget_before_shows_first_then_drops(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    make_training(root, "run", [1, 2, 3], layers=("layer_0",))
    assert cli("prune", str(root), "--keep", "2", "--yes", db=db)[0] == 0
    assert cli("prune", str(root), "--keep", "1", "--yes", db=db)[0] == 0
    code, out, _ = cli("history", str(root), "--forget-before", "0s", db=db)
    assert code == 0 and "would drop" in out and " 2 runs" in out
    assert len(json.loads(cli("history", str(root), "--json", db=db)[1])["runs"]) == 2
    code, out, _ = cli("history", str(root), "--forget-before", "30d", "--yes", db=db)
    assert "dropped 0 runs" in out
    code, out, _ = cli("history", str(root), "--forget-before", "0s", "--yes", db=db)
    assert "dropped 2 runs" in out
    assert json.loads(cli("history", str(root), "--json", db=db)[1])["runs"] == []
    code, _, err = cli("history", str(root), "--since", "nan", db=db)
    assert code == 1 and len(err.strip().splitlines()) == 1


def test_history_of_a_root_with_no_runs_says_so(tmp_path: Path, db: str) -> None:
    code, out, _ = cli("history", str(tmp_path), db=db)
    assert code == 0 and "no deletions recorded" in out
    assert os.path.isdir(tmp_path)

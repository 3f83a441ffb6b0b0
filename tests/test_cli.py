"""The CLI contract scripts rely on: JSON shapes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ckpt_tui.cli import main
from tests.conftest import empty_dirs, files_under, make_training


@pytest.fixture
def db_path(any_db: str) -> str:
    """Every test here runs on SQLite and, when configured, on PostgreSQL."""
    return any_db


def run(*args: str, db: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--db", db], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_ls_json_shape(tree: Path, db_path: str) -> None:
    code, out, _ = run("ls", str(tree), "--json", db=db_path)
    assert code == 0
    doc = json.loads(out)
    assert doc["root"] == str(tree)
    names = [t["name"] for t in doc["trainings"]]
    assert names == ["train_a", "train_b"]
    a = doc["trainings"][0]
    assert a["path"] == str(tree / "train_a")
    assert [s["step"] for s in a["steps"]] == [900, 2000, 10000, 30000]
    step = a["steps"][0]
    assert step["path"] == str(tree / "train_a" / "checkpoints" / "checkpoint_900")
    assert step["status"] == "ok"
    files = step["files"]
    assert [(f["layer"], f["hook"], f["status"]) for f in files] == [
        (7, None, "ok"),
        (14, None, "ok"),
        (18, None, "ok"),
    ]
    assert all(
        os.path.isabs(f["path"]) and os.path.getsize(f["path"]) == f["size_bytes"] for f in files
    )
    assert step["size_bytes"] == sum(f["size_bytes"] for f in files)
    assert a["size_bytes"] == sum(s["size_bytes"] for s in a["steps"])


def test_ls_filters_by_training_and_names_an_unknown_one(tree: Path, db_path: str) -> None:
    code, out, _ = run("ls", str(tree), "--training", "train_b", "--json", db=db_path)
    assert code == 0 and [t["name"] for t in json.loads(out)["trainings"]] == ["train_b"]
    code, _, err = run("ls", str(tree), "--training", "nope", db=db_path)
    assert code == 1 and "nope" in err and "Traceback" not in err


def test_prune_dry_run_then_real_run_free_the_same_bytes(tree: Path, db_path: str) -> None:
    before = files_under(tree)
    code, out, _ = run("prune", str(tree), "--keep", "1", "--dry-run", "--json", db=db_path)
    assert code == 0
    dry = json.loads(out)
    assert dry["dry_run"] is True
    assert [(d["training"], d["step"]) for d in dry["delete"]] == [
        ("train_a", 900),
        ("train_a", 2000),
        ("train_a", 10000),
        ("train_b", 100),
        ("train_b", 200),
    ]
    assert {(k["training"], k["step"]) for k in dry["keep"]} == {
        ("train_a", 30000),
        ("train_b", 300),
    }
    assert dry["bytes"] == sum(d["size_bytes"] for d in dry["delete"])
    assert files_under(tree) == before, "a dry run deletes nothing"
    code, out, _ = run("prune", str(tree), "--keep", "1", "--yes", "--json", db=db_path)
    assert code == 0
    real = json.loads(out)
    assert real["dry_run"] is False and real["failed"] == []
    assert real["freed_bytes"] == dry["bytes"]
    assert len(real["deleted"]) == 3 * 3 + 2
    assert sorted(p.name for p in (tree / "train_a" / "checkpoints").iterdir()) == [
        "checkpoint_30000"
    ]
    assert sorted(p.name for p in (tree / "train_b").iterdir()) == ["checkpoint_300"]
    assert empty_dirs(tree) == []


def test_prune_without_yes_and_without_terminal_refuses(tree: Path, db_path: str) -> None:
    """README: with no terminal and no --yes, nothing is deleted and the exit code is 2."""
    before = files_under(tree)
    for args in (
        ["prune", str(tree), "--keep", "1"],
        ["rm", str(tree), str(tree / "train_b" / "checkpoint_100")],
    ):
        code, _, err = run(*args, db=db_path)
        assert code == 2, (args, err)
        assert "--yes" in err and "nothing was deleted" in err
        assert files_under(tree) == before


def test_rm_step_and_file_targets(tree: Path, db_path: str) -> None:
    step = tree / "train_a" / "checkpoints" / "checkpoint_900"
    layer_file = (
        tree
        / "train_a"
        / "checkpoints"
        / "checkpoint_2000"
        / "layer_7"
        / ("checkpoint.safetensors")
    )
    code, out, _ = run(
        "rm", str(tree), str(step), str(layer_file), "--dry-run", "--json", db=db_path
    )
    assert code == 0
    dry = json.loads(out)
    assert [(d["step"], len(d["files"])) for d in dry["delete"]] == [(900, 3), (2000, 1)]
    code, out, _ = run("rm", str(tree), str(step), str(layer_file), "--yes", "--json", db=db_path)
    real = json.loads(out)
    assert code == 0 and real["freed_bytes"] == dry["bytes"]
    assert not step.exists() and not layer_file.parent.exists()
    assert (layer_file.parent.parent / "layer_14").is_dir()


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "{root}/../x"])
def test_rm_target_outside_root_is_one_line(tree: Path, db_path: str, target: str) -> None:
    code, _, err = run("rm", str(tree), target.format(root=tree), "--yes", db=db_path)
    assert code == 1
    assert err.count("\n") == 1 and "not under the root" in err


def test_rm_unindexed_target_is_named(tree: Path, db_path: str) -> None:
    code, _, err = run("rm", str(tree), str(tree / "train_a" / "nothing"), "--yes", db=db_path)
    assert code == 1 and "nothing" in err and "not an indexed" in err


def test_user_mistakes_are_one_line_without_traceback(tmp_path: Path, db_path: str) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"SQLite format 3\0" + os.urandom(4000))
    # README: exit 1 when the input was refused; usage errors are click's 2.
    cases = [
        (["scan", str(tmp_path / "missing")], db_path, "does not exist", 1),
        (["scan", str(a_file)], db_path, "not a directory", 1),
        (["ls", str(tmp_path)], str(corrupt), "corrupt.sqlite3", 1),
        (["prune", str(tmp_path), "--keep", "0"], db_path, "--keep", 2),
        (["prune", str(tmp_path), "--keep", "1", "--newer-than", "soon"], db_path, "soon", 1),
        (["prune", str(tmp_path), "--keep", "1", "--best", "loss:median"], db_path, "median", 1),
    ]
    for args, db, needle, expected in cases:
        code, _, err = run(*args, db=db)
        assert code == expected, (args, err)
        assert needle in err, (args, err)
        assert "Traceback" not in err


def test_human_ls_is_an_aligned_table(tree: Path, db_path: str) -> None:
    code, out, _ = run("ls", str(tree), db=db_path)
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("TRAINING"))
    size_end = header.index("SIZE") + len("SIZE")
    rows = [line for line in lines if "checkpoint_" in line]
    assert rows and all(line[size_end - 1] == "B" for line in rows), "sizes right-aligned"
    assert lines[-1].startswith("total ") and "2 trainings" in lines[-1]


def test_module_entry_point_and_exit_code_on_failure(tree: Path, db_path: str) -> None:
    """``python -m ckpt_tui`` works; a failed item gives exit code 1 with the path named."""
    victim = tree / "train_b" / "checkpoint_100" / "sae.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "ckpt_tui", "scan", str(tree), "--db", db_path],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "2 trainings" in proc.stdout
    victim.write_bytes(victim.read_bytes() + b"changed")  # changed since the scan
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ckpt_tui",
            "rm",
            str(tree),
            str(victim.parent),
            "--yes",
            "--json",
            "--db",
            db_path,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert [f["path"] for f in doc["changed"]] == [str(victim)]
    assert victim.exists()


def test_scan_json_reports_counts(tmp_path: Path, db_path: str) -> None:
    root = tmp_path / "r"
    make_training(root, "t", [1, 2], layers=("layer_0", "layer_1"))
    code, out, _ = run("scan", str(root), "--json", db=db_path)
    doc = json.loads(out)
    assert code == 0 and (doc["trainings"], doc["steps"], doc["files"]) == (1, 2, 4)
    code, out, _ = run("scan", str(root), "--json", db=db_path)
    assert json.loads(out)["headers_reused"] == 4


def test_bare_root_opens_the_tui_with_the_options(tmp_path: Path, monkeypatch) -> None:
    """``ckpt-tui [OPTIONS] [ROOT]``: a root that is not a command name opens the TUI."""
    import ckpt_tui.tui as tui

    calls: list[tuple[str, str | None, bool, bool]] = []

    def fake_run_tui(
        root: str, db: str | None, *, read_only: bool = False, si: bool = False
    ) -> int:
        calls.append((root, db, read_only, si))
        return 0

    monkeypatch.setattr(tui, "run_tui", fake_run_tui)
    db = str(tmp_path / "i.db")
    for args in (["--db", db, "--read-only", str(tmp_path)], [str(tmp_path), "--db", db, "--si"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert calls == [(str(tmp_path), db, True, False), (str(tmp_path), db, False, True)]
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["--db", db]).exit_code == 0
    assert calls[-1][0] == str(tmp_path), "no ROOT means the current directory"


def test_options_before_the_command_apply_to_it(tree: Path, tmp_path: Path) -> None:
    """``ckpt-tui --db X scan ROOT`` indexes into X (it once went to the default index),
    and a command's own ``--db`` wins over the one before it."""
    before, own = tmp_path / "before.sqlite3", tmp_path / "own.sqlite3"
    runner = CliRunner()
    result = runner.invoke(main, ["--db", str(before), "scan", str(tree)])
    assert result.exit_code == 0, result.stderr
    assert before.stat().st_size > 0
    result = runner.invoke(main, ["--db", str(before), "ls", str(tree), "--json", "--db", str(own)])
    assert result.exit_code == 0 and own.exists()
    assert [t["name"] for t in json.loads(result.stdout)["trainings"]] == ["train_a", "train_b"]


def _damage_files_table(index: Path, name: str = "files") -> None:
    """Overwrite the root page of a table or index (after a checkpoint of the WAL): the file
    still opens, reading it fails with 'database disk image is malformed'."""
    import sqlite3

    with sqlite3.connect(index) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (page,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)
        ).fetchone()
    with index.open("r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xff" * page_size)


def test_a_damaged_index_stops_every_command_with_one_line(tmp_path: Path) -> None:
    """A damaged SQLite page met by any command is one line naming the index, exit 1, no
    traceback; a deletion refuses before it touches a file."""
    root = tmp_path / "root"
    make_training(root, "train", range(1000, 41000, 1000), layers=("layer_0", "layer_1"))
    index = tmp_path / "index.sqlite3"
    code, _, err = run("scan", str(root), db=str(index))
    assert code == 0, err
    _damage_files_table(index)
    before = files_under(root)
    for args in (("ls", str(root)), ("prune", str(root), "--keep", "1", "--yes")):
        code, _, err = run(*args, db=str(index))
        assert code == 1, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert str(index) in err and "malformed" in err, err
    assert files_under(root) == before


def test_a_deletion_checks_the_whole_index_before_it_claims_anything(tmp_path: Path) -> None:
    """Opening the index does not read all of it (that cost every command 0.1-0.2 s at 100k
    files): damage that a listing never meets leaves ls working, but a deletion checks the
    whole file first and refuses with one line, every file still on disk."""
    root = tmp_path / "root"
    make_training(root, "train", (100, 200, 300), layers=("layer_0", "layer_1"))
    index = tmp_path / "index.sqlite3"
    assert run("scan", str(root), db=str(index))[0] == 0
    _damage_files_table(index, "ix_deletion_steps_path")  # read only by the history
    assert run("ls", str(root), db=str(index))[0] == 0
    before = files_under(root)
    code, _, err = run("prune", str(root), "--keep", "1", "--yes", db=str(index))
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(index) in err and "corrupt" in err and "nothing was deleted" in err, err
    assert files_under(root) == before


def test_a_deletion_still_running_is_not_called_interrupted(tmp_path: Path) -> None:
    """Rows claimed by a deleter that still holds the lock: read-only commands say another
    ckpt-tui is deleting (not "interrupted ... the next prune finishes it"); once the lock
    is free the same rows are an interrupted deletion."""
    import fcntl
    import sqlite3
    import time

    root = tmp_path / "root"
    make_training(root, "train", (100, 200, 300), layers=("layer_0",))
    index = tmp_path / "index.sqlite3"
    assert run("scan", str(root), db=str(index))[0] == 0
    with sqlite3.connect(index) as conn:  # what a running deleter's claim leaves
        conn.execute(
            "UPDATE files SET state = 'deleting', claimed_at = ? WHERE relpath LIKE 'layer_0%'"
            " AND step_id = (SELECT min(id) FROM steps)",
            (time.time(),),
        )
    fd = os.open(f"{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the other deleter, holding its lock
        code, _, err = run("ls", str(root), db=str(index))
        assert code == 0 and "another ckpt-tui is deleting" in err and "interrupted" not in err
    finally:
        os.close(fd)
    code, _, err = run("ls", str(root), db=str(index))
    assert code == 0 and "interrupted deletion is pending" in err

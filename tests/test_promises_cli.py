"""README "CLI" promises no other test checked (issue 14): exit code 2 with no terminal and no
``--yes``; the interactive prompt on a real terminal (a pty), answered "n" then "y"; the
second confirmation for a file open in another process; ``$CKPT_TUI_DB`` and the default
index location (the user data directory, never inside a scanned root).

Each test runs the real CLI in a subprocess on real safetensors files and a real SQLite
index; the oracles are the disk and the index file, not the CLI's own summary.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_training

LAYERS = ("layer_0", "layer_1")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CKPT_TUI_DB", None)
    env.update(extra)
    return env


def _cli(
    *args: object, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ckpt_tui", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or _env(),
        **kw,
    )  # type: ignore[call-overload]


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    make_training(root, "t", (100, 200, 300), layers=LAYERS)
    return root, root / "t" / "checkpoints"


def _files(ck: Path, step: int) -> list[Path]:
    return [ck / f"checkpoint_{step}" / layer / "checkpoint.safetensors" for layer in LAYERS]


def _everything(root: Path) -> set[str]:
    """Every path under ``root``, directories included."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------------- no terminal


def test_no_terminal_and_no_yes_exits_2_and_deletes_nothing(tmp_path: Path) -> None:
    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    before = _everything(root)
    cases = {
        "prune": ("prune", root, "--keep", "1", "--db", db),
        "rm": ("rm", root, ck / "checkpoint_100", "--db", db),
        "prune --json": ("prune", root, "--keep", "1", "--json", "--db", db),
    }
    for name, args in cases.items():
        proc = _cli(*args, stdin=subprocess.DEVNULL)
        assert proc.returncode == 2, (name, proc.stderr)
        assert "--yes" in proc.stderr and "nothing was deleted" in proc.stderr, name
        assert _everything(root) == before, name
    # A terminal on stdin is not enough when the output goes to a pipe: still no prompt.
    master, slave = os.openpty()
    try:
        proc = _cli("prune", root, "--keep", "1", "--db", db, stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 2, proc.stderr
    assert _everything(root) == before


# ---------------------------------------------------------------------------- a terminal


class Pty:
    """The CLI on a pseudo-terminal: its stdin, stdout and stderr are the pty's slave."""

    def __init__(self, *args: object, env: dict[str, str] | None = None) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ckpt_tui", *map(str, args)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env or _env(),
            close_fds=True,
            start_new_session=True,
        )
        os.close(slave)
        self.out = ""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        self.out += chunk.decode("utf-8", "replace")
        return True

    def expect(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            assert time.monotonic() < deadline, f"no {text!r} on the terminal:\n{self.out}"
            if not self._read(0.1) and text not in self.out:
                raise AssertionError(f"the CLI ended without {text!r}:\n{self.out}")

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None or self._read(0):
            assert time.monotonic() < deadline, f"the CLI did not end:\n{self.out}"
            if not self._read(0.1) and self.proc.poll() is not None:
                break
        code = self.proc.wait(timeout=timeout)
        os.close(self.master)
        return code


PROMPT = "Delete 4 files in 2 steps? [y/N]"


def test_terminal_prompt_no_keeps_everything_yes_deletes(tmp_path: Path) -> None:
    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    assert _cli("scan", root, "--db", db).returncode == 0
    before = _everything(root)
    term = Pty("prune", root, "--keep", "1", "--db", db)
    term.expect(PROMPT)
    term.send("n")
    assert term.finish() == 0, term.out
    assert "nothing was deleted" in term.out
    assert _everything(root) == before
    term = Pty("prune", root, "--keep", "1", "--db", db)
    term.expect(PROMPT)
    term.send("y")
    assert term.finish() == 0, term.out
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint_300"]
    assert all(p.exists() for p in _files(ck, 300))


HOLDER = "import sys; f = open(sys.argv[1], 'rb'); print('ready', flush=True); sys.stdin.read()"


@pytest.fixture
def hold_open() -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"  # a handshake
        return p

    yield hold
    for p in procs:
        p.communicate(timeout=30)  # closing stdin ends it


def test_open_file_needs_a_second_yes_on_the_terminal(tmp_path: Path, hold_open: object) -> None:
    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    busy, other = _files(ck, 100)
    holder = hold_open(busy)  # type: ignore[operator]
    assert _cli("scan", root, "--db", db).returncode == 0
    # First run: yes to the plan, no to the open file.
    term = Pty("prune", root, "--keep", "1", "--force", "--db", db)
    term.expect("Delete 3 files in 2 steps? [y/N]")
    term.send("y")
    term.expect("1 file(s) are open in another process")
    assert f"process {holder.pid}" in term.out and str(busy) in term.out
    term.send("n")
    assert term.finish() == 0, term.out
    assert busy.exists(), "an open file was deleted after a no"
    assert not other.exists() and not (ck / "checkpoint_200").exists()
    # Second run: the open file is all that is left; its own question, answered yes.
    term = Pty("prune", root, "--keep", "1", "--force", "--db", db)
    term.expect("1 file(s) are open in another process")
    term.send("y")
    assert term.finish() == 0, term.out
    assert not busy.exists()
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint_300"]


def test_open_file_is_never_deleted_by_yes_alone(tmp_path: Path, hold_open: object) -> None:
    """``--yes`` without a terminal answers the first question only."""
    root, ck = _tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    busy, other = _files(ck, 100)
    hold_open(busy)  # type: ignore[operator]
    proc = _cli(
        "prune",
        root,
        "--keep",
        "1",
        "--force",
        "--yes",
        "--json",
        "--db",
        db,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert busy.exists() and not other.exists()
    assert str(busy) in {p["path"] for p in doc["protected"]}
    assert str(busy) not in {d["path"] for d in doc["deleted"]}


# ---------------------------------------------------------------------------- the index


def _roots_in(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("SELECT path FROM roots")]
    finally:
        con.close()


def test_ckpt_tui_db_is_honoured_and_the_default_is_the_user_data_dir(tmp_path: Path) -> None:
    root, _ = _tree(tmp_path)
    xdg, home = tmp_path / "xdg-data", tmp_path / "home"
    home.mkdir()
    before = _everything(root)
    env_db = tmp_path / "elsewhere" / "team.sqlite3"
    env_db.parent.mkdir()
    env = _env(XDG_DATA_HOME=str(xdg), HOME=str(home), CKPT_TUI_DB=str(env_db))
    proc = _cli("scan", root, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert _roots_in(env_db) == [str(root)]
    assert not xdg.exists() or not any(xdg.rglob("*.sqlite3")), "the default was used"
    listed = _cli("ls", root, "--json", env=env)
    assert [t["name"] for t in json.loads(listed.stdout)["trainings"]] == ["t"]
    # --db wins over $CKPT_TUI_DB.
    flag_db = tmp_path / "flag.sqlite3"
    assert _cli("scan", root, "--db", flag_db, env=env).returncode == 0
    assert _roots_in(flag_db) == [str(root)]
    # Without either: the user data directory (platformdirs: $XDG_DATA_HOME/ckpt-tui).
    env.pop("CKPT_TUI_DB")
    proc = _cli("scan", root, env=env)
    assert proc.returncode == 0, proc.stderr
    default = xdg / "ckpt-tui" / "index.sqlite3"
    assert _roots_in(default) == [str(root)]
    assert _everything(root) == before, "scanning wrote inside the root"


def test_scanning_the_folder_that_holds_the_default_index_never_plans_it(
    tmp_path: Path,
) -> None:
    """``ckpt-tui scan ~``: the default index (in the user data directory, inside the root)
    is the only thing written there, and no prune plans it (README: it is never in a step)."""
    home = tmp_path / "home"
    make_training(home / "runs", "t", (100, 200), layers=LAYERS)
    env = _env(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"))
    before = _everything(home)
    proc = _cli("scan", home, env=env)
    assert proc.returncode == 0, proc.stderr
    written = _everything(home) - before
    index = home / ".local" / "share" / "ckpt-tui" / "index.sqlite3"
    assert str(index.relative_to(home)) in written
    data_dir = ".local/share/ckpt-tui"
    assert all(data_dir.startswith(w) or w.startswith(data_dir + "/") for w in written), written
    proc = _cli("prune", home, "--keep", "1", "--yes", "--recent", "0", env=env)
    assert proc.returncode == 0, proc.stderr
    assert index.is_file() and "runs/t/checkpoints/checkpoint_200" in {
        w.rsplit("/", 2)[0] for w in _everything(home)
    }
    assert not any("checkpoint_100" in w for w in _everything(home))

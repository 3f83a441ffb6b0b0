"""README "Teams": the PostgreSQL advisory lock is held for the whole run and the server drops
it when a deleter dies. A deleter is SIGKILLed mid-run (not let to exit cleanly): a deleter
on another machine must then get the lock, finish the killed one's claimed work and the rest.

Needs CKPT_TUI_TEST_PG_URL (``.ci/run`` starts a PostgreSQL server); skipped without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import make_training

RUNNER = Path(__file__).resolve().parent / "reliability" / "_runner.py"


def _machine_env(tmp_path: Path, name: str, **faults: str) -> dict[str, str]:
    """Another 'machine': its own cache directory, so its local lock file is another one."""
    env = dict(os.environ)
    env.pop("CKPT_TUI_DB", None)
    env["XDG_CACHE_HOME"] = str(tmp_path / f"cache-{name}")
    env.update({f"CKPT_FAULT_{k.upper()}": v for k, v in faults.items()})
    return env


def test_advisory_lock_is_released_when_a_deleter_is_killed(tmp_path: Path, pg_db: str) -> None:
    root = tmp_path / "shared"
    make_training(root, "t", (1, 2, 3, 4), layers=("layer_0", "layer_1"))
    ck = root / "t" / "checkpoints"
    base = [sys.executable, str(RUNNER)]
    scan = subprocess.run(
        [*base, "scan", str(root), "--db", pg_db],
        capture_output=True,
        text=True,
        env=_machine_env(tmp_path, "a"),
        timeout=120,
    )
    assert scan.returncode == 0, scan.stderr
    prune = ["prune", str(root), "--keep", "1", "--yes", "--json", "--db", pg_db]
    gate = tmp_path / "gate"
    gate.mkdir()
    # Machine A stops right before its 3rd unlink, holding the advisory lock (a handshake).
    first = subprocess.Popen(
        [*base, *prune],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env=_machine_env(tmp_path, "a", unlink_gate=f"{gate}:3"),
    )
    try:
        deadline = time.monotonic() + 120
        while not (gate / "holding").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the deleter never reached the gate"
            time.sleep(0.01)
        # The lock is really held: machine B is told the index is busy.
        busy = subprocess.run(
            [*base, *prune],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env=_machine_env(tmp_path, "b"),
        )
        assert busy.returncode == 1, busy.stderr
        assert "busy" in busy.stderr and "Traceback" not in busy.stderr
        gone = sorted(p for p in ck.rglob("*.safetensors"))
        assert len(gone) == 8 - 2, "machine A unlinked two files before the gate"
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: no clean exit, no unlock
        first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    # The server dropped A's session and its lock: B now deletes, finishing A's claims too.
    done = subprocess.run(
        [*base, *prune],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=_machine_env(tmp_path, "b"),
    )
    assert done.returncode == 0, done.stderr
    assert "busy" not in done.stderr
    doc = json.loads(done.stdout)
    assert doc["failed"] == [] and doc["changed"] == []
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint_4"]
    assert sorted(p.relative_to(ck).as_posix() for p in ck.rglob("*.safetensors")) == [
        "checkpoint_4/layer_0/checkpoint.safetensors",
        "checkpoint_4/layer_1/checkpoint.safetensors",
    ]

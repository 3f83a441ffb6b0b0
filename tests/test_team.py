"""A team index on PostgreSQL: two deleters on two machines are serialised by a claim in the
database, not only by a local lock file. Runs when CKPT_TUI_TEST_PG_URL names a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import files_under, make_training

HOLD_CLAIM = textwrap.dedent("""
    import asyncio, sys
    from ckpt_tui.db import open_database
    from ckpt_tui.db.claim import deletion_claim

    async def main():
        db = await open_database(sys.argv[1])
        async with deletion_claim(db):
            print("claimed", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
        await db.dispose()

    asyncio.run(main())
""")


def _machine_env(tmp_path: Path, name: str) -> dict[str, str]:
    """Another 'machine': its own cache directory, so its local lock file is a different one."""
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(tmp_path / f"cache-{name}")
    return env


def test_second_machine_is_told_the_index_is_busy(tmp_path: Path, pg_db: str) -> None:
    any_db = pg_db
    root = tmp_path / "shared"
    make_training(root, "t", [1, 2, 3], layers=("layer_0",))
    scan = [sys.executable, "-m", "ckpt_tui", "scan", str(root), "--db", any_db]
    subprocess.run(scan, check=True, capture_output=True, env=_machine_env(tmp_path, "a"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_CLAIM, any_db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_machine_env(tmp_path, "a"),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        before = files_under(root)
        prune = [
            sys.executable,
            "-m",
            "ckpt_tui",
            "prune",
            str(root),
            "--keep",
            "1",
            "--yes",
            "--json",
            "--db",
            any_db,
        ]
        busy = subprocess.run(
            prune, capture_output=True, text=True, env=_machine_env(tmp_path, "b")
        )
        assert busy.returncode == 1, busy.stderr
        assert "busy" in busy.stderr and "Traceback" not in busy.stderr
        assert files_under(root) == before, "nothing is deleted while another machine deletes"
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    done = subprocess.run(prune, capture_output=True, text=True, env=_machine_env(tmp_path, "b"))
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["deleted"]) == 2
    assert sorted(p.name for p in (root / "t" / "checkpoints").iterdir()) == ["checkpoint_3"]

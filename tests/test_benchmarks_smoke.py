"""The benchmark suite runs end to end in its quick mode and writes valid JSON.

No timing assertions: numbers depend on the machine; this only guards the harness.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_run_writes_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,  # quick mode is ~3 min on a quiet 2-core machine, 10+ under load
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["errors"] == []
    assert doc["machine"]["cpus"] >= 1 and doc["date"]
    ids = {r["id"] for r in doc["results"]}
    assert {
        "scan_first_2k",
        "rescan_2k",
        "prune",
        "tui_startup",
        "tui_key_move",
        "tui_key_mark",
        "tui_mark_all_confirm",
        "tui_peak_rss",
        # end to end: a new process per run, next to its reference command
        "e2e_help",
        "e2e_version",
        "e2e_ls_10",
        "e2e_tui_first_frame",
        "e2e_scan_first_2k",
        "e2e_rescan_2k",
        "e2e_prune",
    } <= ids
    assert "e2e_scan_first_100k" not in ids  # the full run only
    for r in doc["results"]:
        if r["id"].startswith("e2e_"):
            assert r["reference_value"] > 0 and r["ratio"] > 0 and r["details"]["samples"]["n"]
    for r in doc["results"]:
        assert isinstance(r["value"], (int, float)) and r["passed"] in (True, False)
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout
    assert not (tmp_path / "work").exists()  # trees are removed unless --keep

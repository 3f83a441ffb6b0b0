"""Exports: ncdu's JSON dump (opened by ncdu itself when installed) and CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ckpt_tui.cli import main


@pytest.fixture
def db_path(any_db: str) -> str:
    """Every test here runs on SQLite and, when configured, on PostgreSQL."""
    return any_db


def _ls(tree: Path, db: str, fmt: str) -> str:
    result = CliRunner().invoke(main, ["ls", str(tree), "--format", fmt, "--db", db])
    assert result.exit_code == 0, result.output
    return result.stdout


def _files(node: list[Any], prefix: str = "") -> dict[str, int]:
    """path -> asize for every file in an ncdu directory node."""
    info, *children = node
    here = f"{prefix}/{info['name']}" if prefix else info["name"]
    out: dict[str, int] = {}
    for child in children:
        if isinstance(child, list):
            out.update(_files(child, here))
        else:
            out[f"{here}/{child['name']}"] = child["asize"]
    return out


def test_ncdu_export_lists_every_indexed_file_with_its_size(tree: Path, db_path: str) -> None:
    doc = json.loads(_ls(tree, db_path, "ncdu"))
    major, minor, meta, top = doc
    assert (major, minor) == (1, 2) and meta["progname"] == "ckpt-tui"
    files = _files(top)
    on_disk = {str(p): p.stat().st_size for p in tree.rglob("*") if p.is_file()}
    assert files == on_disk


def test_ncdu_itself_opens_the_export(tree: Path, db_path: str, tmp_path: Path) -> None:
    if shutil.which("ncdu") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs ncdu; it is missing")
        pytest.skip("ncdu is not installed")
    dump = tmp_path / "dump.json"
    dump.write_text(_ls(tree, db_path, "ncdu"))
    again = tmp_path / "again.json"
    subprocess.run(
        ["ncdu", "-f", str(dump), "-o", str(again)], check=True, capture_output=True, timeout=30
    )
    reread = json.loads(again.read_text())
    assert _files(reread[3]) == _files(json.loads(dump.read_text())[3])


def test_csv_export_has_a_row_per_file(tree: Path, db_path: str) -> None:
    rows = list(csv.DictReader(io.StringIO(_ls(tree, db_path, "csv"))))
    assert len(rows) == 4 * 3 + 3
    first = rows[0]
    assert (first["training"], first["step"], first["layer"], first["status"]) == (
        "train_a",
        "900",
        "7",
        "ok",
    )
    assert int(first["size_bytes"]) == os.path.getsize(first["path"])
    assert {r["training"] for r in rows} == {"train_a", "train_b"}

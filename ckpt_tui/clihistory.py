"""``ckpt-tui history``: who deleted what, when, and what it freed (text and JSON)."""

from __future__ import annotations

import time
from typing import Any

import click

from ckpt_tui.clifmt import size
from ckpt_tui.history import RunRecord


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def run_json(root: str, runs: list[RunRecord]) -> dict[str, Any]:
    return {
        "root": root,
        "runs": [
            {
                "id": r.id,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "user": r.user,
                "host": r.host,
                "pid": r.pid,
                "face": r.face,
                "command": r.command,
                "rules": r.rules,
                "outcome": r.outcome,
                "finished_by": r.finished_by,
                "planned_files": r.planned_files,
                "planned_bytes": r.planned_bytes,
                "planned_disk_bytes": r.planned_disk_bytes,
                "freed_files": r.freed_files,
                "freed_bytes": r.freed_bytes,
                "freed_disk_bytes": r.freed_disk_bytes,
                "dirs_removed": r.dirs_removed,
                "steps": [
                    {
                        "path": s.path,
                        "files_planned": s.files_planned,
                        "files_deleted": s.files_deleted,
                        "freed_bytes": s.freed_bytes,
                        "freed_disk_bytes": s.freed_disk_bytes,
                        "result": s.result,
                        "errors": list(s.errors),
                    }
                    for s in r.steps
                ],
            }
            for r in runs
        ],
    }


def outcome_text(r: RunRecord) -> str:
    if r.outcome == "interrupted" and r.finished_by is not None:
        return f"interrupted, finished by run {r.finished_by}"
    return r.outcome


def print_runs(root: str, runs: list[RunRecord], *, verbose: bool) -> None:
    click.echo(f"root {root}")
    if not runs:
        click.echo("no deletions recorded")
        return
    for r in runs:
        deleted = sum(1 for s in r.steps if s.result in ("deleted", "partly deleted"))
        what = r.command or r.face.upper()
        freed = size(r.freed_disk_bytes)
        if r.freed_bytes != r.freed_disk_bytes:
            freed += f" on disk ({size(r.freed_bytes)} apparent)"
        click.echo(
            f"#{r.id}  {when(r.started_at)}  {r.user}@{r.host}  {r.face}  {what}  "
            f"{outcome_text(r)}: {deleted} steps, {r.freed_files} files, freed {freed}"
        )
        if verbose:
            for s in r.steps:
                click.echo(
                    f"      {s.path}  {s.result}  {s.files_deleted}/{s.files_planned} files  "
                    f"{size(s.freed_disk_bytes)}"
                )
                for e in s.errors:
                    click.echo(f"        {e.get('path')}: {e.get('error')}")

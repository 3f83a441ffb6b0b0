"""CLI output: aligned tables, JSON shapes (a contract for scripts) and terminal progress bars."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click
import humanize

from ckpt_tui.types import (
    DeleteProgress,
    ExecuteResult,
    Interrupted,
    MiStudioPending,
    MiStudioStep,
    MiStudioSummary,
    MiStudioTraining,
    Outcome,
    Plan,
    ScanProgress,
    ScanResult,
    TrainingTree,
)

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

SHOW_PATHS = 10  # plan listings show this many steps before "... and N more"


def size(n: int) -> str:
    return humanize.naturalsize(n)


def age(mtime_ns: int | None) -> str:
    if not mtime_ns:
        return "-"
    return humanize.naturaltime(time.time() - mtime_ns / 1e9)


def _table(rows: list[list[str]], right: set[int]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


def _mi_training(m: MiStudioTraining | None) -> dict[str, Any] | None:
    return None if m is None else {"training_id": m.training_id, "status": m.status}


def _mi_step(m: MiStudioStep | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"rows": m.rows, "is_best": m.is_best, "loss": m.loss, "l0_sparsity": m.l0_sparsity}


def mistudio_summary_json(mi: MiStudioSummary) -> dict[str, Any]:
    return {
        "database": mi.database,
        "matched_trainings": mi.matched,
        "orphan_steps": mi.orphans,
        "stale_rows": mi.stale_rows,
        "ambiguous": {k: list(v) for k, v in mi.ambiguous},
        "unrecognised_rows": mi.unrecognised,
        "pending_rows": mi.pending.rows if mi.pending else 0,
    }


def tree_json(
    root: str, tree: list[TrainingTree], mistudio: MiStudioSummary | None = None
) -> dict[str, Any]:
    """``ls --json``. With ``mistudio`` (--mistudio): miStudio's status per training, rows,
    best and means per step, stale rows per training, trainings with only stale rows."""
    on = mistudio is not None
    stale_only = [
        {
            "name": t.training_id,
            "path": t.path,
            "size_bytes": 0,
            "disk_bytes": 0,
            "step_count": 0,
            "steps": [],
            "mistudio": {"training_id": t.training_id, "status": t.status},
            "stale_rows": t.stale_rows,
        }
        for t in (mistudio.stale_only if mistudio else ())
    ]
    return {
        "root": root,
        "mistudio": mistudio_summary_json(mistudio) if mistudio else None,
        "trainings": [
            {
                "name": t.training.name,
                "path": t.training.path,
                "size_bytes": t.training.size_bytes,
                "disk_bytes": t.training.disk_bytes,
                "step_count": t.training.step_count,
                "mistudio": _mi_training(t.training.mistudio),
                "stale_rows": (
                    (t.training.mistudio.stale_rows if t.training.mistudio else 0) if on else None
                ),
                "steps": [
                    {
                        "step": s.step.step,
                        "path": s.step.path,
                        "size_bytes": s.step.size_bytes,
                        "disk_bytes": s.step.disk_bytes,
                        "status": "incomplete" if s.step.incomplete else "ok",
                        "problems": list(s.step.problems),
                        "pinned": s.step.pinned,
                        "mtime_ns": s.step.mtime_ns,
                        "protection": list(s.step.protection),
                        "mistudio": _mi_step(s.step.mistudio),
                        "files": [
                            {
                                "path": f.path,
                                "layer": f.layer,
                                "hook": f.hook,
                                "size_bytes": f.size_bytes,
                                "disk_bytes": f.disk_bytes,
                                "status": f.status.value,
                                "error": f.error,
                            }
                            for f in s.files
                        ],
                    }
                    for s in t.steps
                ],
            }
            for t in tree
        ]
        + stale_only,
    }


def _mi_step_flag(m: MiStudioStep | None) -> str:
    if m is None:
        return ""
    if not m.rows:
        return "no miStudio record"
    out = "best in miStudio" if m.is_best else ""
    if m.loss is not None:
        out += (", " if out else "") + f"loss {m.loss:.4g}"
    return out


def print_mistudio_summary(mi: MiStudioSummary) -> None:
    """What miStudio's database says about the root, in a few lines."""
    click.echo(
        f"miStudio {mi.database}: {mi.matched} trainings matched, {mi.orphans} step folders "
        f"with no miStudio record, {mi.stale_rows} stale rows (file gone"
        + ("; prune/rm --stale-records deletes them)" if mi.stale_rows else ")")
    )
    for t in mi.stale_only:
        click.echo(
            f"  {t.training_id}: miStudio {t.status}, no folder left at {t.path}, "
            f"{t.stale_rows} stale rows"
        )
    for name, where in mi.ambiguous:
        click.echo(f"  {name}: found in {len(where)} folders ({', '.join(where)}): not matched")
    if mi.unrecognised:
        click.echo(
            f"  {mi.unrecognised} rows name a path not under <training>/checkpoints/: ignored"
        )


def print_tree(
    root: str, tree: list[TrainingTree], mistudio: MiStudioSummary | None = None
) -> None:
    click.echo(f"root {root}")
    if not tree and not (mistudio and mistudio.stale_only):
        click.echo("no checkpoints found")
        if mistudio is not None:
            print_mistudio_summary(mistudio)
        return
    rows = [["TRAINING / STEP", "SIZE", "FILES", "LAYERS", "AGE", "STATUS"]]
    total = files = 0
    for t in tree:
        ti = t.training
        rng = f"steps {ti.min_step}..{ti.max_step}" if ti.step_count else "no steps"
        rows.append(
            [
                ti.name,
                size(ti.size_bytes),
                str(ti.file_count),
                str(ti.layer_count or "-"),
                age(ti.newest_mtime_ns),
                f"{ti.step_count} steps ({rng})"
                + (f", miStudio {ti.mistudio.status}" if ti.mistudio else "")
                + (
                    f", {ti.mistudio.stale_rows} stale rows"
                    if ti.mistudio and ti.mistudio.stale_rows
                    else ""
                ),
            ]
        )
        total += ti.size_bytes
        files += ti.file_count
        for s in t.steps:
            flag = "; ".join(s.step.problems) if s.step.incomplete else "ok"
            if s.step.pinned:
                flag = "pinned, " + flag
            mi_flag = _mi_step_flag(s.step.mistudio)
            if mi_flag:
                flag += ", " + mi_flag
            rows.append(
                [
                    f"  {s.step.dirname}",
                    size(s.step.size_bytes),
                    str(s.step.file_count),
                    str(s.step.layer_count or "-"),
                    age(s.step.mtime_ns),
                    flag,
                ]
            )
    for st in mistudio.stale_only if mistudio else ():
        rows.append([st.training_id, "-", "0", "-", "-", f"miStudio {st.status}, no folder left"])
    _table(rows, {1, 2, 3})
    click.echo(f"total {size(total)} in {_n(files, 'file')}, {_n(len(tree), 'training')}")
    if mistudio is not None:
        print_mistudio_summary(mistudio)


def print_scan(r: ScanResult) -> None:
    click.echo(
        f"scanned {r.root}: {r.trainings} trainings, {r.steps} steps, {r.files} files, "
        f"{size(r.size_bytes)} in {r.seconds:.2f}s (headers read {r.headers_read}, "
        f"reused {r.headers_reused}, {r.removed_files} gone from disk)"
    )
    for note in r.notes[:20]:
        click.echo(f"  note: {note}")


def _rel(root: str, path: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "dry_run": True,
        "root": plan.root,
        "delete": [
            {
                "training": s.training,
                "step": s.step,
                "path": s.path,
                "size_bytes": s.size_bytes,
                "disk_bytes": s.disk_bytes,
                "whole": s.whole,
                "empty": not s.files,
                "files": [f"{plan.root}/{f.path_rel}" for f in s.files],
                "mistudio_rows": (
                    sum(1 for r in plan.mistudio.rows if r.step_id == s.step_id)
                    if plan.mistudio
                    else None
                ),
            }
            for s in plan.steps
        ],
        "keep": [
            {
                "training": k.training,
                "step": k.step,
                "path": k.path,
                "size_bytes": k.size_bytes,
                "reasons": list(k.reasons),
            }
            for k in plan.keep
        ],
        "protected": [{"path": p.path, "reason": p.reason} for p in plan.protected],
        "foreign": [{"path": f.path, "size_bytes": f.size_bytes} for f in plan.foreign],
        "removes_dirs_if_empty": [f"{plan.root}/{'/'.join(d)}" for d in plan.training_dirs],
        "files": plan.file_count,
        "bytes": plan.bytes,
        "disk_bytes": plan.disk_bytes,
        "mistudio": _mi_plan_json(plan),
    }


def _mi_plan_json(plan: Plan) -> dict[str, Any] | None:
    mi = plan.mistudio
    if mi is None:
        return None
    return {
        "database": mi.database,
        "rows": len(mi.rows),
        "stale_rows": [
            {
                "id": r.id,
                "training_id": r.training_id,
                "step": r.step,
                "storage_path": r.storage_path,
                "path": r.path,
                "is_best": r.is_best,
            }
            for r in mi.stale
        ],
        "stale_kept": mi.stale_kept,
    }


def _both(apparent: int, disk: int) -> str:
    """``1.2 GB`` when apparent and allocated agree, else ``1.2 GB (4.0 kB on disk)``."""
    if apparent == disk:
        return size(apparent)
    return f"{size(apparent)} ({size(disk)} on disk)"


def _protected_lines(plan: Plan) -> list[str]:
    """Protected items; a step protected as a whole once (its folder, files, reason)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in plan.protected:
        groups.setdefault((p.step_path or p.path, p.reason), []).append(p.path)
    lines = []
    for (where, reason), paths in groups.items():
        if len(paths) == 1:
            lines.append(f"{_rel(plan.root, paths[0])}: {reason}")
        else:
            lines.append(f"{_rel(plan.root, where)}/ ({len(paths)} files): {reason}")
    return lines


def print_plan(plan: Plan, *, dry_run: bool) -> None:
    numbers: dict[tuple[str, int], int] = {}
    for k in plan.keep:
        numbers[(k.training, k.step)] = numbers.get((k.training, k.step), 0) + 1
    for k in plan.keep:
        # two folders for one step number: name the one kept
        where = f"  {_rel(plan.root, k.path)}" if numbers[(k.training, k.step)] > 1 else ""
        click.echo(
            f"keep    {k.training} {k.step:>10}  {size(k.size_bytes):>10}  "
            f"({', '.join(k.reasons)}){where}"
        )
    lines = _protected_lines(plan)
    for line in lines[:SHOW_PATHS]:
        click.echo(f"protect {line}")
    if len(lines) > SHOW_PATHS:
        click.echo(f"protect ... and {len(lines) - SHOW_PATHS} more")
    rows = [["", "TRAINING", "STEP", "SIZE", "FILES", "PATH"]]
    for s in plan.steps:
        what = "empty" if not s.files else "delete" if s.whole else "partial"
        rows.append(
            [
                what,
                s.training,
                str(s.step),
                size(s.size_bytes),
                str(len(s.files)),
                _rel(plan.root, s.path),
            ]
        )
    if len(rows) > 1:
        _table(rows[: SHOW_PATHS * 3 + 1], {2, 3, 4})
        if len(rows) > SHOW_PATHS * 3 + 1:
            click.echo(f"... and {len(rows) - 1 - SHOW_PATHS * 3} more steps")
    for d in plan.training_dirs:
        click.echo(f"rmdir   {'/'.join(d)}/ if it is empty afterwards")
    if plan.foreign:
        total = sum(f.size_bytes for f in plan.foreign)
        click.echo(
            f"kept    {len(plan.foreign)} foreign files ({size(total)}) in the planned steps, "
            "not written by the trainer (--include-foreign deletes them too):"
        )
        for f in plan.foreign[:SHOW_PATHS]:
            click.echo(f"          {_rel(plan.root, f.path)}  {size(f.size_bytes)}")
        if len(plan.foreign) > SHOW_PATHS:
            click.echo(f"          ... and {len(plan.foreign) - SHOW_PATHS} more")
    if plan.mistudio is not None:
        _print_mi_plan(plan, dry_run=dry_run)
    empty = sum(1 for s in plan.steps if not s.files)
    verb = "would free" if dry_run else "to free"
    click.echo(
        f"{len(plan.steps)} steps, {plan.file_count} files, {verb} "
        f"{_both(plan.bytes, plan.disk_bytes)}"
        + (f"; {empty} empty step folders go (rmdir only)" if empty else "")
        + (" (dry run: nothing deleted)" if dry_run else "")
    )


def _print_mi_plan(plan: Plan, *, dry_run: bool) -> None:
    mi = plan.mistudio
    assert mi is not None
    verb = "would delete" if dry_run else "deletes"
    with_rows = {r.step_id for r in mi.rows}
    orphans = sum(1 for s in plan.steps if s.step_id not in with_rows and s.files)
    click.echo(
        f"miStudio {mi.database}: {verb} {len(mi.rows)} rows of these files, per step once "
        "all its files are gone"
        + (f"; {orphans} planned step folders have no miStudio record" if orphans else "")
    )
    for r in mi.stale[:SHOW_PATHS]:
        best = " (marked best in miStudio)" if r.is_best else ""
        click.echo(
            f"stale   {r.training_id} {r.step:>10}  {r.storage_path}: file gone, row goes{best}"
        )
    if len(mi.stale) > SHOW_PATHS:
        click.echo(f"stale   ... and {len(mi.stale) - SHOW_PATHS} more")
    if mi.stale_kept:
        click.echo(
            f"miStudio: {mi.stale_kept} stale rows (file gone) are kept; --stale-records "
            "deletes them"
        )


def mistudio_result_json(result: ExecuteResult | None) -> dict[str, Any] | None:
    m = result.mistudio if result is not None else None
    if m is None:
        return None
    return {
        "database": m.database,
        "rows_deleted": m.rows_deleted,
        "rows_kept": m.rows_kept,
        "stale_deleted": m.stale_deleted,
        "repaired": m.repaired,
        "error": m.error,
    }


def result_json(result: ExecuteResult | None, plan: Plan | None = None) -> dict[str, Any]:
    protected = [{"path": p.path, "reason": p.reason} for p in (plan.protected if plan else ())]
    foreign = [{"path": f.path, "size_bytes": f.size_bytes} for f in (plan.foreign if plan else ())]
    if result is None:
        return {
            "dry_run": False,
            "deleted": [],
            "failed": [],
            "skipped": [],
            "already_gone": [],
            "changed": [],
            "appeared": [],
            "freed_bytes": 0,
            "freed_disk_bytes": 0,
            "removed_dirs": [],
            "protected": protected,
            "foreign": foreign,
            "recovered": 0,
            "mistudio": None,
        }
    return {
        "dry_run": False,
        "deleted": [
            {"path": r.path, "size_bytes": r.freed_bytes, "disk_bytes": r.freed_disk_bytes}
            for r in result.deleted
        ],
        "already_gone": [{"path": r.path} for r in result.already_gone],
        "changed": [{"path": r.path, "error": r.error} for r in result.changed],
        "appeared": [{"path": p} for p in result.appeared],
        "failed": [
            {"path": r.path, "error": r.error or r.outcome.value}
            for r in result.results
            if r.outcome == Outcome.FAILED
        ],
        "skipped": [
            {"path": r.path, "reason": r.error}
            for r in result.results
            if r.outcome == Outcome.SKIPPED
        ],
        "protected": protected,
        "foreign": foreign,
        "removed_dirs": list(result.removed_dirs),
        "freed_bytes": result.freed_bytes,
        "freed_disk_bytes": result.freed_disk_bytes,
        "recovered": result.recovered,
        "stopped": result.stopped,
        "cancelled": result.cancelled,
        "seconds": round(result.seconds, 3),
        "mistudio": mistudio_result_json(result),
    }


def print_result(result: ExecuteResult) -> None:
    if result.recovered:
        click.echo(f"finished an interrupted deletion first: {result.recovered} files")
    failed = [r for r in result.results if r.outcome == Outcome.FAILED]
    for r in failed[:SHOW_PATHS]:
        click.echo(f"failed  {r.path}: {r.error}", err=True)
    if len(failed) > SHOW_PATHS:
        click.echo(f"failed  ... and {len(failed) - SHOW_PATHS} more", err=True)
    for r in result.changed[:SHOW_PATHS]:
        click.echo(f"changed {r.path}: left alone ({r.error})", err=True)
    if len(result.changed) > SHOW_PATHS:
        click.echo(f"changed ... and {len(result.changed) - SHOW_PATHS} more", err=True)
    for p in result.appeared[:SHOW_PATHS]:
        click.echo(f"appeared {p}: written since the scan; left alone", err=True)
    if len(result.appeared) > SHOW_PATHS:
        click.echo(f"appeared ... and {len(result.appeared) - SHOW_PATHS} more", err=True)
    if result.already_gone:
        click.echo(f"already gone: {len(result.already_gone)} files (their rows were dropped)")
    if result.stopped:
        click.echo(f"ckpt-tui: {result.stopped}", err=True)
    click.echo(
        f"deleted {len(result.deleted)} files, removed {len(result.removed_dirs)} emptied "
        f"directories, freed {_both(result.freed_bytes, result.freed_disk_bytes)} "
        f"in {result.seconds:.2f}s"
        + (f"; {len(failed)} failed" if failed else "")
        + (f"; {len(result.changed)} changed since the scan" if result.changed else "")
    )
    m = result.mistudio
    if m is not None:
        click.echo(
            f"miStudio {m.database}: deleted {m.rows_deleted} rows of deleted files"
            + (f", {m.stale_deleted} stale rows" if m.stale_deleted else "")
            + (f", {m.repaired} left by an interrupted run" if m.repaired else "")
            + (
                f"; kept {m.rows_kept} rows of steps not every file of which went"
                if m.rows_kept
                else ""
            )
        )


def print_mistudio_pending(pending: MiStudioPending, *, finishing: bool) -> None:
    """One line on stderr: miStudio rows an interrupted deletion left (files gone)."""
    since = (
        f" since {time.strftime('%Y-%m-%d %H:%M', time.localtime(pending.since))}"
        if pending.since
        else ""
    )
    tail = (
        "deleting them first"
        if finishing
        else f"the next `prune`/`rm` with --yes and --mistudio {pending.database} deletes them"
    )
    click.echo(
        f"ckpt-tui: an interrupted deletion left {pending.rows} miStudio rows of "
        f"{pending.steps} deleted steps in {pending.database}{since}; {tail}",
        err=True,
    )


def print_interrupted(pending: Interrupted, *, finishing: bool) -> None:
    """One line on stderr about an interrupted deletion (read-only commands never finish it)."""
    since = (
        f" since {time.strftime('%Y-%m-%d %H:%M', time.localtime(pending.since))}"
        if (pending.since)
        else ""
    )
    steps = ", ".join(pending.first_steps[:3]) + (", ..." if pending.steps > 3 else "")
    if pending.running:
        click.echo(
            f"ckpt-tui: another ckpt-tui is deleting through this index{since}: "
            f"{pending.files} files in {pending.steps} steps ({steps}) are its to finish",
            err=True,
        )
        return
    tail = (
        "finishing it first"
        if finishing
        else "nothing was deleted now; the next `prune`/`rm` with --yes finishes it"
    )
    click.echo(
        f"ckpt-tui: an interrupted deletion is pending{since}: {pending.files} files in "
        f"{pending.steps} steps ({steps}); {tail}",
        err=True,
    )


class Progress:
    """A rich progress bar on stderr, only when stderr is a terminal (rich is imported then)."""

    def __init__(self, bar: RichProgress, task: TaskID) -> None:
        self.bar = bar
        self.task = task

    @classmethod
    def for_scan(cls, *, enabled: bool) -> Progress | None:
        if not (enabled and sys.stderr.isatty()):
            return None
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        bar = RichProgress(
            TextColumn("scanning"),
            BarColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=True,
        )
        bar.start()
        return cls(bar, bar.add_task("", total=None))

    @classmethod
    def for_delete(cls, plan: Plan, *, enabled: bool) -> Progress | None:
        if not (enabled and sys.stderr.isatty()) or plan.empty:
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        bar = RichProgress(
            TextColumn("deleting"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        bar.start()
        return cls(bar, bar.add_task("", total=plan.bytes or 1))

    def on_scan(self, p: ScanProgress) -> None:
        self.bar.update(
            self.task,
            description=f"{p.files_seen} files, {p.steps_found} steps, {size(p.bytes_seen)}",
        )

    def on_delete(self, p: DeleteProgress) -> None:
        self.bar.update(self.task, completed=p.bytes_freed)

    def close(self) -> None:
        self.bar.stop()


def _n(count: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"

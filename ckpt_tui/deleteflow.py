"""The deleting commands' shared flow: plan, show, confirm, delete, report (``prune``, ``rm``).

Imported only when one of them runs (``cli`` keeps --help light).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click

from ckpt_tui.clifmt import (
    Progress,
    plan_json,
    print_interrupted,
    print_mistudio_pending,
    print_plan,
    print_result,
    result_json,
)
from ckpt_tui.history import RunContext
from ckpt_tui.protection import Protection
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import DeleteProgress, Plan

EXIT_FAILED = 1  # some items failed, or the user's input was refused
EXIT_REFUSED = 2  # asked to delete without --yes and without a terminal to ask on


async def delete_flow(
    root: str,
    db: str | None,
    make: Callable[[CheckpointService, int, bool], Coroutine[Any, Any, Plan]],
    dry_run: bool,
    yes: bool,
    as_json: bool,
    recent: float,
    *,
    explicit: bool,
    rules: dict[str, Any],
    mistudio: str | None = None,
) -> int:
    """Plan, show, confirm, delete. ``explicit``: the user named the targets (``rm``), so
    a plan that deletes none of them is refused (exit 1), not a success. ``rules`` are
    recorded in the deletion history with the command line. ``mistudio``: miStudio's
    database URL (its rows go with their files)."""
    async with await CheckpointService.open(
        db, protection=Protection(recent_seconds=recent), mistudio=mistudio or ""
    ) as svc:
        if not dry_run:  # a permission problem is one line before anything is shown
            await svc.check_mistudio(write=True)
        info = await svc.indexed_root(root)
        args = click.get_current_context().meta.get("ckpt_args", sys.argv[1:])
        ctx = RunContext("cli", shlex.join(["ckpt-tui", *args]), rules)
        plan = await make(svc, info.id, False)
        pending = await svc.interrupted()
        mi_pending = await svc.mistudio_pending()
        mi_repairs = (
            mi_pending is not None
            and svc.mistudio is not None
            and mi_pending.database == svc.mistudio.display
        )
        stale_rows = len(plan.mistudio.stale) if plan.mistudio is not None else 0
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        if dry_run:
            if pending is not None:
                print_interrupted(pending, finishing=False)
            if mi_pending is not None:
                print_mistudio_pending(mi_pending, finishing=False)
            click.echo(json.dumps(plan_json(plan))) if as_json else print_plan(plan, dry_run=True)
            return 0
        if not as_json:
            print_plan(plan, dry_run=False)
        if mi_pending is not None and not mi_repairs:
            print_mistudio_pending(mi_pending, finishing=False)
        if plan.empty and not stale_rows and not any(p.needs_confirmation for p in plan.protected):
            done = None
            if (pending is not None or mi_repairs) and (yes or interactive):
                if pending is not None:
                    print_interrupted(pending, finishing=True)
                if mi_repairs and mi_pending is not None:
                    print_mistudio_pending(mi_pending, finishing=True)
                done = await svc.execute(plan, ctx=ctx)  # IndexBusy while it still runs
                if not as_json:
                    print_result(done)
            if as_json:
                click.echo(json.dumps(result_json(done, plan)))
            if explicit and plan.protected:
                reasons = sorted({p.reason for p in plan.protected})
                click.echo(
                    "ckpt-tui: nothing was deleted: every target is protected ("
                    + "; ".join(reasons[:3])
                    + ")",
                    err=True,
                )
                return EXIT_FAILED
            return 0
        allow_open = False
        if not yes:
            if not interactive:
                click.echo(
                    "ckpt-tui: refusing to delete without --yes when there is no terminal "
                    "to confirm on; nothing was deleted",
                    err=True,
                )
                return EXIT_REFUSED
            rows = (
                f" and {len(plan.mistudio.rows) + stale_rows} miStudio rows"
                if plan.mistudio is not None and (plan.mistudio.rows or stale_rows)
                else ""
            )
            if (not plan.empty or stale_rows) and not click.confirm(
                f"Delete {plan.file_count} files in {len(plan.steps)} steps{rows}?", default=False
            ):
                click.echo("nothing was deleted", err=True)
                return 0
        open_items = [p for p in plan.protected if p.needs_confirmation]
        if (
            open_items
            and interactive
            and click.confirm(
                f"{len(open_items)} file(s) are open in another process "
                f"(e.g. {open_items[0].path}: {open_items[0].reason}). Delete them too?",
                default=False,
            )
        ):
            allow_open = True
            plan = await make(svc, info.id, True)
        progress = Progress.for_delete(plan, enabled=not as_json)
        on_progress: Callable[[DeleteProgress], None] | None = (
            progress.on_delete if progress else None
        )
        if pending is not None:
            print_interrupted(pending, finishing=True)
        if mi_repairs and mi_pending is not None:
            print_mistudio_pending(mi_pending, finishing=True)
        result = await svc.execute(plan, on_progress, allow_open=allow_open, ctx=ctx)
        if progress:
            progress.close()
        if as_json:
            click.echo(json.dumps(result_json(result, plan)))
        else:
            print_result(result)
        return 0 if result.ok else EXIT_FAILED

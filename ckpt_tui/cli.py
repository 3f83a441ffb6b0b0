"""The ``ckpt-tui`` command: the TUI by default, plus scan / ls / prune / rm for scripts."""

from __future__ import annotations

# Start-up is paid by every command, so this module imports only click and what --help and
# --version need. Each command imports its own machinery (the service pulls in SQLAlchemy,
# clifmt pulls in humanize and rich, the TUI pulls in textual) inside its body;
# tests/test_cli_imports.py checks this.
import functools
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ckpt_tui import __version__
from ckpt_tui.errors import CkptError, TargetError

if TYPE_CHECKING:
    from ckpt_tui.service import CheckpointService
    from ckpt_tui.types import Plan

T = TypeVar("T")
EXIT_FAILED = 1  # some items failed, or the user's input was refused
EXIT_REFUSED = 2  # asked to delete without --yes and without a terminal to ask on


class _RootOrCommand(click.Group):
    """``ckpt-tui [OPTIONS] [ROOT]`` opens the TUI; ``ckpt-tui scan ...`` runs a command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["ckpt_args"] = list(args)  # the command line, for the deletion history
        takes_value = {"--db", "--mistudio"}  # the group's options that take a value
        i = 0
        while i < len(args):
            a = args[i]
            if a == "--":
                break
            if a.startswith("-"):
                i += 2 if a in takes_value else 1
                continue
            if a not in self.commands:
                ctx.meta["ckpt_root"] = a
                args = args[:i] + args[i + 1 :]
            break
        return super().parse_args(ctx, args)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    return asyncio.run(coro)


def _guard(fn: Callable[..., int | None]) -> Callable[..., None]:
    """Turn a user-caused CkptError into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = fn(*args, **kwargs)
        except CkptError as err:
            click.echo(f"ckpt-tui: {err}", err=True)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            click.echo("ckpt-tui: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            line = _index_failure(exc, kwargs.get("db"))
            if line is None:
                raise
            click.echo(f"ckpt-tui: {line}", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code or 0)

    return wrapper


def _index_failure(exc: Exception, db: str | None) -> str | None:
    """One line for a database error met after the index opened (a damaged page of an
    SQLite file, a server gone away); None for anything else (a bug: its traceback)."""
    import sqlite3

    sa_exc = sys.modules.get("sqlalchemy.exc")  # imported by then if the error is its own
    if sa_exc is None or not isinstance(exc, (sa_exc.SQLAlchemyError, sqlite3.DatabaseError)):
        return None
    from ckpt_tui.db.engine import describe_error, display_url

    return (
        f"index {display_url(db)} cannot be read: {describe_error(exc)}; the command stopped there"
    )


def _inherit(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """An option given before the command applies to it (``ckpt-tui --db X scan ROOT``)
    unless the command is given its own; before the command it beats the environment."""
    from click.core import ParameterSource

    if param.name is None or ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        return value
    given = ctx.meta.get("ckpt_group_options", {}).get(param.name)
    return value if given is None else given


db_option = click.option(
    "--db",
    "db",
    metavar="DB",
    default=None,
    callback=_inherit,
    help="Index: a file path or an SQLAlchemy async URL (default: $CKPT_TUI_DB, else a file "
    "in your user data directory).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
mistudio_option = click.option(
    "--mistudio",
    "mistudio",
    metavar="URL",
    default=None,
    envvar="CKPT_TUI_MISTUDIO_URL",
    show_envvar=True,
    callback=_inherit,
    help="miStudio's database (its DATABASE_URL: postgresql+asyncpg://user:pass@host:port/db): "
    "show each training's status and each step's rows, best flag and loss; protect active "
    "trainings and the best step; delete a step's checkpoint rows once its files are gone.",
)
stale_option = click.option(
    "--stale-records",
    is_flag=True,
    help="With --mistudio: also delete miStudio checkpoint rows whose file is already gone "
    "(listed by the dry run).",
)


def _stale_needs_mistudio(stale_records: bool, mistudio: str | None) -> None:
    if stale_records and not mistudio:
        raise TargetError("--stale-records needs --mistudio URL (miStudio's database)")


protect_options = [
    click.option(
        "--force",
        is_flag=True,
        help="Lift live-writer protection of the newest step and recently modified "
        "files (files open in other processes still need a second yes).",
    ),
    click.option(
        "--recent",
        default="120",
        show_default=True,
        metavar="SECONDS",
        help="Files modified this recently are protected (0 turns this off).",
    ),
    click.option(
        "--include-foreign",
        is_flag=True,
        help="Also delete the foreign files the plan lists (files under a step that its "
        "trainer did not write: notes, READMEs, analysis folders). Check the dry run first.",
    ),
]


MAX_SECONDS = 100 * 365 * 86400.0  # a century: larger durations are typing mistakes


def _seconds(value: float | str, what: str) -> float:
    """A finite, non-negative number of seconds, or one clear refusal (never a traceback)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        raise TargetError(f"{what} must be a number of seconds, not {value!r}") from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise TargetError(f"{what} must be a finite number of seconds, not {value!r}")
    if seconds < 0:
        raise TargetError(f"{what} cannot be negative ({value!r}); 0 turns the protection off")
    if seconds > MAX_SECONDS:
        raise TargetError(f"{what} is more than a century ({value!r}); refused")
    return seconds


def _add(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def deco(f: Any) -> Any:
        for o in reversed(options):
            f = o(f)
        return f

    return deco


@click.group(
    cls=_RootOrCommand,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@db_option
@click.option(
    "--demo", is_flag=True, help="Build a demo tree in a temporary directory and open it."
)
@click.option("--read-only", is_flag=True, help="Browse only: deletion is turned off.")
@click.option(
    "--si", is_flag=True, help="Decimal units (1 kB = 1000 B) instead of binary (1 KiB = 1024 B)."
)
@click.option("-v", "--verbose", count=True, help="Log to stderr (-v info, -vv debug).")
@mistudio_option
@click.version_option(__version__, prog_name="ckpt-tui")
@click.pass_context
def main(
    ctx: click.Context,
    db: str | None,
    demo: bool,
    read_only: bool,
    si: bool,
    verbose: int,
    mistudio: str | None,
) -> None:
    """Browse checkpoints under ROOT (default: the current directory) and delete safely.

    \b
    ckpt-tui [OPTIONS] [ROOT]        open the TUI on ROOT
    ckpt-tui scan  ROOT              index ROOT
    ckpt-tui ls    ROOT              list trainings, steps and files
    ckpt-tui prune ROOT --keep N     delete all but the newest N steps
    ckpt-tui rm    ROOT TARGET...    delete step, training folders or files
    ckpt-tui pin   ROOT STEP_DIR...  never delete these steps (unpin undoes it)
    ckpt-tui history ROOT            who deleted what, when, and what it freed
    """
    if verbose:
        import logging

        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )
    if ctx.invoked_subcommand is not None:
        from click.core import ParameterSource

        ctx.meta["ckpt_group_options"] = {
            name: value
            for name, value in (("db", db), ("mistudio", mistudio))
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
        }
        return
    root = ctx.meta.get("ckpt_root")
    _guard(_open_tui)(root, db, demo, read_only, si, mistudio)


def _open_tui(
    root: str | None,
    db: str | None,
    demo: bool,
    read_only: bool,
    si: bool,
    mistudio: str | None = None,
) -> int:
    if demo:
        from ckpt_tui.demo import build_demo

        click.echo("building the demo tree…", err=True)
        tree = build_demo()
        root = str(tree.root)
        db = db or str(tree.db_path)
    root = os.path.abspath(root or os.getcwd())
    from ckpt_tui.tui import run_tui

    if not mistudio:
        return run_tui(root, db, read_only=read_only, si=si)
    from ckpt_tui.service import CheckpointService

    # the app opens its own service: it takes the miStudio database from here
    CheckpointService.default_mistudio = mistudio
    try:
        return run_tui(root, db, read_only=read_only, si=si)
    finally:
        CheckpointService.default_mistudio = None


@main.command()
@click.argument("root", type=click.Path(file_okay=True, dir_okay=True))
@db_option
@json_option
@mistudio_option
@_guard
def scan(root: str, db: str | None, as_json: bool, mistudio: str | None) -> int:
    """Index ROOT (incremental: unchanged files are not read again)."""
    import json

    from ckpt_tui.clifmt import (
        Progress,
        mistudio_summary_json,
        print_interrupted,
        print_mistudio_pending,
        print_mistudio_summary,
        print_scan,
    )
    from ckpt_tui.service import CheckpointService

    async def go() -> int:
        async with await CheckpointService.open(db, mistudio=mistudio or "") as svc:
            progress = Progress.for_scan(enabled=not as_json)
            result = await svc.scan(root, progress.on_scan if progress else None)
            if progress:
                progress.close()
            pending = await svc.interrupted()
            if pending is not None:
                print_interrupted(pending, finishing=False)
            mi_pending = await svc.mistudio_pending()
            if mi_pending is not None:
                print_mistudio_pending(mi_pending, finishing=False)
            summary = await svc.mistudio_summary(result.root_id)
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "root": result.root,
                            "trainings": result.trainings,
                            "steps": result.steps,
                            "files": result.files,
                            "size_bytes": result.size_bytes,
                            "headers_read": result.headers_read,
                            "headers_reused": result.headers_reused,
                            "removed_files": result.removed_files,
                            "seconds": round(result.seconds, 3),
                            "notes": list(result.notes),
                            "mistudio": mistudio_summary_json(summary) if summary else None,
                        }
                    )
                )
            else:
                print_scan(result)
                if summary is not None:
                    print_mistudio_summary(summary)
            return 0

    return _run(go())


@main.command(name="ls")
@click.argument("root", type=click.Path())
@db_option
@click.option(
    "--training",
    "trainings",
    multiple=True,
    metavar="NAME",
    help="Only this training (repeatable).",
)
@json_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "ncdu", "csv"]),
    default=None,
    help="Output format: table (default), json, ncdu (open with `ncdu -f FILE`) or csv.",
)
@mistudio_option
@_guard
def ls_cmd(
    root: str,
    db: str | None,
    trainings: tuple[str, ...],
    as_json: bool,
    fmt: str | None,
    mistudio: str | None,
) -> int:
    """List trainings, steps and files of ROOT (scanning it first if it is not indexed)."""
    import json
    from dataclasses import replace

    from ckpt_tui import export
    from ckpt_tui.clifmt import print_interrupted, print_mistudio_pending, print_tree, tree_json
    from ckpt_tui.service import CheckpointService

    fmt = fmt or ("json" if as_json else "table")

    async def go() -> int:
        async with await CheckpointService.open(db, mistudio=mistudio or "") as svc:
            info = await svc.indexed_root(root)
            pending = await svc.interrupted()
            if pending is not None:
                print_interrupted(pending, finishing=False)
            mi_pending = await svc.mistudio_pending()
            if mi_pending is not None:
                print_mistudio_pending(mi_pending, finishing=False)
            ids = await svc.resolve_trainings(info.id, trainings) if trainings else None
            tree = await svc.tree(info.id, training_ids=ids)
            summary = await svc.mistudio_summary(info.id)
            if summary is not None and trainings:  # only the trainings asked for
                summary = replace(summary, stale_only=())
            if svc.mistudio_problem is not None:
                raise TargetError(svc.mistudio_problem)
            if fmt == "json":
                click.echo(json.dumps(tree_json(info.path, tree, summary)))
            elif fmt == "ncdu":
                click.echo(json.dumps(export.ncdu(info.path, tree)))
            elif fmt == "csv":
                click.echo(export.to_csv(tree), nl=False)
            else:
                print_tree(info.path, tree, summary)
            return 0

    return _run(go())


@main.command()
@click.argument("root", type=click.Path())
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    required=True,
    metavar="N",
    help="Keep the newest N steps of each training (N >= 1).",
)
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="Also keep, for each multiple of K, the step closest to it.",
)
@click.option(
    "--best",
    default=None,
    metavar="KEY[:min|max]",
    help="Also keep the best step(s) by a __metadata__ key (default min).",
)
@click.option(
    "--best-n",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="How many best steps --best keeps.",
)
@click.option(
    "--newer-than",
    default=None,
    metavar="DURATION",
    help="Also keep steps written within DURATION (e.g. 24h, 7d).",
)
@click.option(
    "--training",
    "trainings",
    multiple=True,
    metavar="NAME",
    help="Only this training (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask: delete the plan.")
@json_option
@db_option
@_add(protect_options)
@mistudio_option
@stale_option
@_guard
def prune(
    root: str,
    keep: int,
    every: int | None,
    best: str | None,
    best_n: int,
    newer_than: str | None,
    trainings: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    as_json: bool,
    db: str | None,
    force: bool,
    recent: str,
    include_foreign: bool,
    mistudio: str | None,
    stale_records: bool,
) -> int:
    """Delete all but the steps the rules keep. Rules count valid steps only; the newest
    valid step, pinned steps and steps that may be in progress are always kept.

    Rules combine as a union, and each kept step shows every reason it is kept. Empty step
    folders older than the newest valid step are removed (rmdir only).

    With --mistudio, every step of an active training (pending, initializing, running,
    paused) and its best step are kept too (--force lifts both), a step's rows go once
    all its files are gone, and --best loss ranks by miStudio's loss when the files carry
    no such key.
    """
    from ckpt_tui.retention import Rules, parse_best, parse_duration

    recent_s = _seconds(recent, "--recent")
    _stale_needs_mistudio(stale_records, mistudio)
    try:
        rules = Rules(
            keep=keep,
            every=every,
            best=parse_best(best, best_n) if best else None,
            newer_than_s=(
                _seconds(parse_duration(newer_than), "--newer-than") if newer_than else None
            ),
            newer_than_label=newer_than or "",
        )
    except (ValueError, OverflowError) as err:
        raise TargetError(str(err)) from None

    async def make(svc: CheckpointService, root_id: int, include_open: bool) -> Plan:
        return await svc.plan_retention(
            root_id,
            keep,
            trainings or None,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
            rules=rules,
            stale_records=stale_records,
        )

    from ckpt_tui.deleteflow import delete_flow

    rules_used = {
        "keep": keep,
        "every": every,
        "best": best,
        "best_n": best_n if best else None,
        "newer_than": newer_than,
        "trainings": list(trainings),
        "force": force,
        "include_foreign": include_foreign,
        "recent": recent_s,
        "mistudio": bool(mistudio),
        "stale_records": stale_records,
    }
    return _run(
        delete_flow(
            root,
            db,
            make,
            dry_run,
            yes,
            as_json,
            recent_s,
            explicit=False,
            rules=rules_used,
            mistudio=mistudio,
        )
    )


@main.command()
@click.argument("root", type=click.Path())
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask: delete the plan.")
@json_option
@db_option
@_add(protect_options)
@mistudio_option
@stale_option
@_guard
def rm(
    root: str,
    targets: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    as_json: bool,
    db: str | None,
    force: bool,
    recent: str,
    include_foreign: bool,
    mistudio: str | None,
    stale_records: bool,
) -> int:
    """Delete step folders, files in them, or whole training folders under ROOT (exactly
    what was scanned; a training's emptied folders go after its last step).

    With --mistudio, steps of an active training and the best step are protected (--force
    lifts both) and a step's rows go once all its files are gone; --stale-records also
    deletes the targets' trainings' rows whose file is gone."""
    recent_s = _seconds(recent, "--recent")
    _stale_needs_mistudio(stale_records, mistudio)

    async def make(svc: CheckpointService, root_id: int, include_open: bool) -> Plan:
        return await svc.plan_targets(
            root_id,
            targets,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
            stale_records=stale_records,
        )

    from ckpt_tui.deleteflow import delete_flow

    rules_used = {
        "targets": list(targets),
        "force": force,
        "include_foreign": include_foreign,
        "recent": recent_s,
        "mistudio": bool(mistudio),
        "stale_records": stale_records,
    }
    return _run(
        delete_flow(
            root,
            db,
            make,
            dry_run,
            yes,
            as_json,
            recent_s,
            explicit=True,
            rules=rules_used,
            mistudio=mistudio,
        )
    )


@main.command()
@click.argument("root", type=click.Path())
@db_option
@click.option("--since", default=None, metavar="DURATION", help="Only runs within DURATION (7d).")
@click.option("--step", "step", default=None, metavar="PATH", help="Every run that touched PATH.")
@click.option("-v", "--verbose", is_flag=True, help="Each run's steps too.")
@json_option
@click.option(
    "--forget-before",
    default=None,
    metavar="DURATION",
    help="Drop runs older than DURATION (shows how many first; --yes drops them).",
)
@click.option("--yes", "-y", is_flag=True, help="With --forget-before: drop them.")
@_guard
def history(
    root: str,
    db: str | None,
    since: str | None,
    step: str | None,
    verbose: bool,
    as_json: bool,
    forget_before: str | None,
    yes: bool,
) -> int:
    """Deletion history under ROOT, newest first: who, when, what, what it freed.

    Runs older than a year are dropped automatically when a new deletion starts.
    """
    import json

    from ckpt_tui.retention import parse_duration
    from ckpt_tui.service import CheckpointService

    def seconds(text: str, what: str) -> float:
        try:
            return _seconds(parse_duration(text), what)
        except (ValueError, OverflowError) as err:
            raise TargetError(str(err)) from None

    async def go() -> int:
        from ckpt_tui.clihistory import print_runs, run_json

        where = os.path.realpath(os.path.abspath(root))
        rel = None
        if step is not None:
            full = os.path.realpath(os.path.abspath(step))
            rel = os.path.relpath(full, where) if full.startswith(where + "/") else step
        async with await CheckpointService.open(db) as svc:
            if forget_before is not None:
                cutoff = time.time() - seconds(forget_before, "--forget-before")
                n = await svc.forget_history(root, cutoff, dry_run=not yes)
                verb = "dropped" if yes else "would drop (run again with --yes)"
                click.echo(f"{verb} {n} runs under {where} older than {forget_before}")
                return 0
            after = time.time() - seconds(since, "--since") if since else None
            runs = await svc.history(root, since=after, step=rel)
        if as_json:
            click.echo(json.dumps(run_json(where, runs)))
        else:
            print_runs(where, runs, verbose=verbose or step is not None)
        return 0

    return _run(go())


@main.command()
@click.argument("root", type=click.Path())
@click.argument("steps", nargs=-1, required=True, metavar="STEP_DIR...")
@db_option
@_guard
def pin(root: str, steps: tuple[str, ...], db: str | None) -> int:
    """Pin step folders: never planned or deleted, under any root that holds them."""
    return _run(_set_pins(root, steps, db, pinned=True))


@main.command()
@click.argument("root", type=click.Path())
@click.argument("steps", nargs=-1, required=True, metavar="STEP_DIR...")
@db_option
@_guard
def unpin(root: str, steps: tuple[str, ...], db: str | None) -> int:
    """Unpin step folders."""
    return _run(_set_pins(root, steps, db, pinned=False))


async def _set_pins(root: str, steps: tuple[str, ...], db: str | None, *, pinned: bool) -> int:
    from ckpt_tui.service import CheckpointService

    async with await CheckpointService.open(db) as svc:
        info = await svc.indexed_root(root)
        for path in await svc.set_pinned_paths(info.id, steps, pinned):
            click.echo(f"{'pinned' if pinned else 'unpinned'} {path}")
    return 0

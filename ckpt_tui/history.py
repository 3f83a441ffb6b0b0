"""Deletion history: a durable record of every run, written by the deleter's own transactions.

A run row is committed before the first unlink; each batch's step results go into the same
transaction that finishes the batch in the index (never a commit per file); the run's totals
and outcome are written when it ends. A run killed midway stays ``running`` until the next
deleting run, which holds the deletion lock (so the other one is dead), marks it
``interrupted`` and links itself as ``finished_by``.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ckpt_tui.db import Database, DeletionRun, DeletionStep, FileRow, Step
from ckpt_tui.types import (
    ExecuteResult,
    Interrupted,
    ItemResult,
    Outcome,
    Plan,
    PlannedStep,
    RowState,
)

KEEP_DAYS = 365  # runs older than this are dropped at the start of each deleting run
RUNNING = "running"
INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class RunContext:
    """Who asks for a deletion: the face, the command line, the rules used."""

    face: str = "api"  # "cli", "tui" or "api"
    command: str = ""
    rules: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StepRecord:
    path: str  # relative to the run's root
    files_planned: int
    files_deleted: int
    freed_bytes: int
    freed_disk_bytes: int
    result: str
    errors: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    root: str
    started_at: float
    finished_at: float | None
    user: str
    host: str
    pid: int
    face: str
    command: str
    rules: dict[str, Any] | None
    outcome: str
    finished_by: int | None
    planned_files: int
    planned_bytes: int
    planned_disk_bytes: int
    freed_files: int
    freed_bytes: int
    freed_disk_bytes: int
    dirs_removed: int
    steps: tuple[StepRecord, ...] = ()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the uid says who
        return f"uid {os.getuid()}"


def _rel(root: str, path: str) -> str:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


async def start(db: Database, plan: Plan, ctx: RunContext) -> int:
    """Commit the run row (before any unlink); drop runs past KEEP_DAYS. The run's id."""
    now = time.time()
    async with db.sessions() as session, session.begin():
        old = select(DeletionRun.id).where(DeletionRun.started_at < now - KEEP_DAYS * 86400)
        await session.execute(delete(DeletionStep).where(DeletionStep.run_id.in_(old)))
        await session.execute(
            delete(DeletionRun).where(DeletionRun.started_at < now - KEEP_DAYS * 86400)
        )
        run_id = (
            await session.execute(
                insert(DeletionRun)
                .values(
                    root=plan.root,
                    started_at=now,
                    user=_login(),
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    face=ctx.face,
                    command=ctx.command,
                    rules=ctx.rules,
                    planned_files=plan.file_count,
                    planned_bytes=plan.bytes,
                    planned_disk_bytes=plan.disk_bytes,
                    outcome=RUNNING,
                )
                .returning(DeletionRun.id)
            )
        ).scalar_one()
        rows = protected_rows(run_id, plan)
        if rows:
            await session.execute(insert(DeletionStep), rows)
    return int(run_id)


def protected_rows(run_id: int, plan: Plan) -> list[dict[str, Any]]:
    """Steps a rule or a mark asked for that protection kept whole: recorded with the reason."""
    planned = {s.step_id for s in plan.steps}
    by_step: dict[str, tuple[str, int]] = {}
    for p in plan.protected:
        if p.step_id is None or p.step_id in planned or not p.step_path:
            continue
        reason, n = by_step.get(p.step_path, (p.reason, 0))
        by_step[p.step_path] = (reason, n + 1)
    return [
        {
            "run_id": run_id,
            "path": _rel(plan.root, path),
            "files_planned": 0,
            "files_deleted": 0,
            "freed_bytes": 0,
            "freed_disk_bytes": 0,
            "result": f"protected: {reason}",
            "errors": None,
        }
        for path, (reason, _n) in sorted(by_step.items())
    ]


def step_rows(
    run_id: int,
    root: str,
    batch: Iterable[PlannedStep],
    results: Iterable[ItemResult],
    removed_steps: set[int],
    foreign_steps: set[int],
    *,
    credit_gone: bool = False,
) -> list[dict[str, Any]]:
    """One row per step of a finished batch, with the result a person would want to read.

    ``credit_gone``: finishing an interrupted run, whose process unlinked files and died
    before recording them: files already gone are counted as that run's, with the bytes
    its plan promised (the claim shows it was the one deleting them)."""
    by_step: dict[int, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_step[r.step_id].append(r)
    rows = []
    for s in batch:
        items = by_step.get(s.step_id, [])
        n = Counter(r.outcome for r in items)
        errors = [
            {"path": _rel(root, r.path), "error": r.error or r.outcome.value}
            for r in items
            if r.outcome == Outcome.FAILED
        ]
        deleted = n[Outcome.DELETED]
        freed = sum(r.freed_bytes for r in items)
        freed_disk = sum(r.freed_disk_bytes for r in items)
        if credit_gone:
            planned = {f.file_id: f for f in s.files}
            gone = [
                planned[r.file_id]
                for r in items
                if r.outcome == Outcome.ALREADY_GONE and r.file_id in planned
            ]
            deleted += len(gone)
            freed += sum(f.freed_bytes for f in gone)
            freed_disk += sum(f.freed_disk_bytes for f in gone)
            n[Outcome.DELETED] = deleted
        if errors:
            result = "partly deleted"
        elif n[Outcome.CHANGED]:
            result = "partly deleted" if deleted else "skipped: changed since scan"
        elif n[Outcome.SKIPPED] or len(items) < len(s.files):  # cancelled before reaching
            result = "partly deleted" if deleted else "skipped: cancelled"
        elif s.files and not deleted:
            result = "already gone"
        elif s.step_id in foreign_steps and s.step_id not in removed_steps:
            result = "kept: foreign files"
        else:
            result = "deleted"
        rows.append(
            {
                "run_id": run_id,
                "path": _rel(root, s.path),
                "files_planned": len(s.files),
                "files_deleted": deleted,
                "freed_bytes": freed,
                "freed_disk_bytes": freed_disk,
                "result": result,
                "errors": errors or None,
            }
        )
    return rows


async def add_steps(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(DeletionStep), rows)


async def finish(db: Database, run_id: int, result: ExecuteResult | None, outcome: str) -> None:
    """The run's totals and outcome (``failed`` when it raised before finishing)."""
    values: dict[str, Any] = {"finished_at": time.time(), "outcome": outcome}
    if result is not None:
        values |= {
            "freed_files": len(result.deleted),
            "freed_bytes": result.freed_bytes,
            "freed_disk_bytes": result.freed_disk_bytes,
            "dirs_removed": len(result.removed_dirs),
        }
    async with db.sessions() as session, session.begin():
        await session.execute(update(DeletionRun).where(DeletionRun.id == run_id).values(**values))


def outcome_of(result: ExecuteResult) -> str:
    if result.cancelled:
        return "cancelled"
    if result.stopped:
        return "stopped"
    return "finished"


async def link_interrupted(session: AsyncSession, by_run: int | None) -> list[int]:
    """Runs left ``running`` (their process is dead: the caller holds the deletion lock)
    become ``interrupted``, finished by ``by_run``; their totals are their recorded steps."""
    q = select(DeletionRun.id).where(DeletionRun.outcome == RUNNING)
    if by_run is not None:
        q = q.where(DeletionRun.id != by_run)
    ids = [int(i) for i in (await session.execute(q)).scalars()]
    for rid in ids:
        sums = (
            await session.execute(
                select(
                    func.coalesce(func.sum(DeletionStep.files_deleted), 0),
                    func.coalesce(func.sum(DeletionStep.freed_bytes), 0),
                    func.coalesce(func.sum(DeletionStep.freed_disk_bytes), 0),
                ).where(DeletionStep.run_id == rid)
            )
        ).one()
        await session.execute(
            update(DeletionRun)
            .where(DeletionRun.id == rid)
            .values(
                outcome=INTERRUPTED,
                finished_by=by_run,
                finished_at=time.time(),
                freed_files=int(sums[0]),
                freed_bytes=int(sums[1]),
                freed_disk_bytes=int(sums[2]),
            )
        )
    return ids


async def read(
    db: Database,
    root: str,
    *,
    since: float | None = None,
    step: str | None = None,
    with_steps: bool = True,
) -> list[RunRecord]:
    """Runs under ``root``, newest first; ``step`` (a path relative to the root) keeps only
    the runs that touched that step folder, each with just that step."""
    q = select(DeletionRun).where(DeletionRun.root == root)
    if since is not None:
        q = q.where(DeletionRun.started_at >= since)
    q = q.order_by(DeletionRun.started_at.desc(), DeletionRun.id.desc())
    async with db.sessions() as session:
        runs = list((await session.execute(q)).scalars())
        steps: dict[int, list[StepRecord]] = defaultdict(list)
        if (with_steps or step is not None) and runs:
            sq = select(DeletionStep).where(DeletionStep.run_id.in_([r.id for r in runs]))
            if step is not None:
                sq = sq.where(DeletionStep.path == step.strip("/"))
            for s in (await session.execute(sq.order_by(DeletionStep.id))).scalars():
                steps[s.run_id].append(
                    StepRecord(
                        s.path,
                        s.files_planned,
                        s.files_deleted,
                        s.freed_bytes,
                        s.freed_disk_bytes,
                        s.result,
                        tuple(s.errors or ()),
                    )
                )
    return [
        RunRecord(
            r.id,
            r.root,
            r.started_at,
            r.finished_at,
            r.user,
            r.host,
            r.pid,
            r.face,
            r.command,
            r.rules,
            r.outcome,
            r.finished_by,
            r.planned_files,
            r.planned_bytes,
            r.planned_disk_bytes,
            r.freed_files,
            r.freed_bytes,
            r.freed_disk_bytes,
            r.dirs_removed,
            tuple(steps.get(r.id, ())),
        )
        for r in runs
        if step is None or steps.get(r.id)
    ]


@dataclass(frozen=True, slots=True)
class LastDeletion:
    run_id: int
    started_at: float
    user: str
    host: str
    face: str
    steps: int
    freed_bytes: int
    freed_disk_bytes: int


async def last_deletion(db: Database, root: str, steps_rel: str) -> LastDeletion | None:
    """The newest run that deleted steps under ``steps_rel`` (the folder holding a
    training's steps, relative to ``root``), with what it did there."""
    prefix = f"{steps_rel}/" if steps_rel else ""
    cond = (DeletionRun.root == root) & DeletionStep.result.in_(("deleted", "partly deleted"))
    if prefix:
        cond = cond & DeletionStep.path.startswith(prefix, autoescape=True)
    async with db.sessions() as session:
        q = (
            select(DeletionRun.id)
            .join(DeletionStep, DeletionStep.run_id == DeletionRun.id)
            .where(cond)
            .order_by(DeletionRun.started_at.desc(), DeletionRun.id.desc())
            .limit(1)
        )
        run_id = (await session.execute(q)).scalar()
        if run_id is None:
            return None
        run = await session.get(DeletionRun, run_id)
        assert run is not None
        n, freed, disk = (
            await session.execute(
                select(
                    func.count(DeletionStep.id),
                    func.coalesce(func.sum(DeletionStep.freed_bytes), 0),
                    func.coalesce(func.sum(DeletionStep.freed_disk_bytes), 0),
                )
                .join(DeletionRun, DeletionRun.id == DeletionStep.run_id)
                .where(cond, DeletionStep.run_id == run_id)
            )
        ).one()
    return LastDeletion(
        run.id, run.started_at, run.user, run.host, run.face, int(n), int(freed), int(disk)
    )


async def pending(db: Database) -> Interrupted | None:
    """What an interrupted deletion left claimed (read-only: nothing is touched)."""
    async with db.sessions() as session:
        q = select(
            func.count(FileRow.id),
            func.count(func.distinct(FileRow.step_id)),
            func.min(FileRow.claimed_at),
            func.coalesce(func.sum(FileRow.size_bytes), 0),
        ).where(FileRow.state == RowState.DELETING.value)
        files, steps, since, size = (await session.execute(q)).one()
        if not files:
            return None
        q2 = (
            select(Step.relpath)
            .join(FileRow, FileRow.step_id == Step.id)
            .where(FileRow.state == RowState.DELETING.value)
            .distinct()
            .order_by(Step.relpath)
            .limit(5)
        )
        first = tuple(str(r) for r in (await session.execute(q2)).scalars())
    return Interrupted(
        int(files),
        int(steps),
        float(since) if since else None,
        int(size),
        first,
        running=lock_held(db),
    )


def lock_held(db: Database) -> bool:
    """Whether another process holds the deletion lock now (its claimed rows are a deletion
    still running, not an interrupted one); tried, never waited for, never created."""
    try:
        fd = os.open(db.lock_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # drops the lock if this took it
    return False


async def forget(db: Database, root: str, before: float, *, dry_run: bool) -> int:
    """Drop the runs under ``root`` that started before ``before``; how many (or would)."""
    where = (DeletionRun.root == root) & (DeletionRun.started_at < before)
    async with db.sessions() as session, session.begin():
        n = int(
            (await session.execute(select(func.count(DeletionRun.id)).where(where))).scalar_one()
        )
        if not dry_run and n:
            ids = select(DeletionRun.id).where(where)
            await session.execute(delete(DeletionStep).where(DeletionStep.run_id.in_(ids)))
            await session.execute(delete(DeletionRun).where(where))
    return n

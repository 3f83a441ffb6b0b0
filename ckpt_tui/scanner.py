"""Scan a root into the index: walk in a thread, reconcile in batches on the event loop.

Rows are committed as steps are found (so a face can browse during a scan), a transaction
per batch; files and steps gone from disk leave the index when the walk completes.

Where the time goes (see benchmarks/README.md): the walk starts at once, while the index rows
are loaded (identity columns only, no JSON) on the event loop, so loading overlaps the walk;
unchanged files produce no SQL at all; new steps and files are inserted with one executemany
per batch instead of a statement per step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, Text, delete, insert, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from ckpt_tui.db import Database, FileRow, Root, Step, Training
from ckpt_tui.db.engine import json_text
from ckpt_tui.fs import RootHandle
from ckpt_tui.types import RowState, ScanProgress, ScanResult
from ckpt_tui.walk import KnownIndex, KnownRow, ScannedFile, ScannedStep, Walker, WalkStats

log = logging.getLogger(__name__)

BATCH_FILES = 2000  # files per batch the walker hands over (one transaction per batch)
BATCH_SECONDS = 0.5  # or sooner, so rows appear while a slow walk goes on
TICK_SECONDS = 0.1  # progress callback rate limit
DELETE_CHUNK = 500  # ids per DELETE ... WHERE id IN (...)
# Header reads through a thread pool: measured no faster on 2 cores (validation holds the
# GIL); set CKPT_TUI_HEADER_WORKERS=N to try it where the filesystem is the slow part.
HEADER_WORKERS = int(os.environ.get("CKPT_TUI_HEADER_WORKERS", "0") or 0)

ProgressFn = Callable[[ScanProgress], None]

_FILES_TABLE: Table = FileRow.__table__  # type: ignore[assignment]
_STEPS_TABLE: Table = Step.__table__  # type: ignore[assignment]
_META_KEY = FileRow.meta.property.columns[0].key  # the table key: "metadata"


class Scanner:
    def __init__(self, db: Database, root: RootHandle, root_id: int) -> None:
        self.db = db
        self.root = root
        self.root_id = root_id
        self.training_ids: dict[str, int] = {}
        self.step_ids: dict[tuple[int, str], int] = {}
        self.step_facts: dict[int, tuple[str | None, str | None]] = {}  # id -> stored JSON text
        self.file_ids: dict[int, int] = {}  # file id -> step id, rows in scope at load time
        self.seen_files: set[int] = set()
        self.seen_steps: set[int] = set()
        self.seen_trainings: set[int] = set()
        self.header_workers = HEADER_WORKERS

    async def _load(self, session: AsyncSession, training_rel: str | None) -> KnownIndex:
        """Existing rows for this root: ids for reconciling, identities to skip unchanged files.

        Only identity columns are read (no JSON decoding): an unchanged file needs nothing
        else, and a changed one gets its header read again anyway.
        """
        q = select(Training.id, Training.relpath).where(Training.root_id == self.root_id)
        for tid, rel in (await session.execute(q)).all():
            self.training_ids[rel] = tid
        # Core columns (no ORM row loading); the JSON facts as stored text, decoded only
        # when not null (a JSON decode per step costs more than the rest of the load).
        S, T = _STEPS_TABLE.c, Training.__table__.c
        q2 = (
            select(
                S.id,
                S.training_id,
                S.relpath,
                type_coerce(S.problems, Text),
                type_coerce(S.config, Text),
            )
            .join(Training.__table__, T.id == S.training_id)
            .where(T.root_id == self.root_id)
        )
        for sid, tid, rel, problems, config in (await session.execute(q2)).all():
            self.step_ids[(tid, rel)] = sid
            self.step_facts[sid] = (problems, config)
        # Files by step id (no join per row: a join on steps costs twice as much here).
        F = _FILES_TABLE.c
        scope = (
            select(S.id)
            .join(Training.__table__, T.id == S.training_id)
            .where(T.root_id == self.root_id)
        )
        if training_rel is not None:
            scope = scope.where(T.relpath == training_rel)
        q3 = select(
            F.step_id, F.relpath, F.id, F.inode, F.size_bytes, F.mtime_ns, F.nlink, F.role
        ).where(F.step_id.in_(scope.scalar_subquery()))
        rel_of = {sid: rel for (_tid, rel), sid in self.step_ids.items()}
        by_step: dict[int, dict[str, KnownRow]] = {}
        file_ids = self.file_ids
        for sid, rel, fid, ino, size, mtime, nlink, role in (await session.execute(q3)).all():
            rows = by_step.get(sid)
            if rows is None:
                rows = by_step[sid] = {}
            rows[rel] = (fid, ino, size, mtime, nlink, role)
            file_ids[fid] = sid
        known: KnownIndex = {rel_of[sid]: rows for sid, rows in by_step.items()}
        return known

    async def run(
        self,
        on_progress: ProgressFn | None = None,
        training_rel: str | None = None,
        cancel: threading.Event | None = None,
    ) -> ScanResult:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[ScannedStep] | None] = asyncio.Queue()
        last_tick = [0.0]
        current = [""]

        def emit(steps: list[ScannedStep]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, steps)

        def tick(stats: WalkStats, path: str) -> None:
            current[0] = path
            if on_progress:
                now = time.monotonic()
                if now - last_tick[0] >= TICK_SECONDS:
                    last_tick[0] = now
                    p = self._progress(stats, path)
                    loop.call_soon_threadsafe(on_progress, p)

        # The index first, then the walk: overlapping them was slower on 2 cores (the
        # GIL-holding row loading convoys the walk's syscalls).
        async with self.db.sessions() as session:
            known = await self._load(session, training_rel)
        walker = Walker(
            self.root.path,
            known,
            emit,
            tick,
            cancelled=(cancel.is_set if cancel else lambda: False),
            header_workers=self.header_workers,
            batch_files=BATCH_FILES,
            batch_seconds=BATCH_SECONDS,
        )
        start = tuple(training_rel.split("/")) if training_rel else ()

        def run_walk() -> WalkStats:
            try:
                # one training: only the folders directly in its relpath (its steps); a
                # nested family of steps is another training, outside this scan's rows
                return walker.walk(start, descend=training_rel is None)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        walk_task = asyncio.ensure_future(asyncio.to_thread(run_walk))
        while True:
            item = await queue.get()
            done = item is None
            pending: list[ScannedStep] = [] if item is None else item
            while not done and not queue.empty():  # coalesce batches that queued up meanwhile
                more = queue.get_nowait()
                if more is None:
                    done = True
                else:
                    pending += more
            if pending:
                await self._write(pending)
                if on_progress:
                    on_progress(self._progress(walker.stats, current[0]))
            if done:
                break
        counts = await walk_task
        removed = 0
        if not (cancel and cancel.is_set()):
            removed = await self._remove_missing(training_rel)
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                update(Root).where(Root.id == self.root_id).values(scanned_at=time.time())
            )
        result = ScanResult(
            root_id=self.root_id,
            root=self.root.path,
            trainings=len(self.seen_trainings),
            steps=counts.steps,
            files=counts.files,
            size_bytes=counts.bytes,
            headers_read=counts.headers_read,
            headers_reused=counts.headers_reused,
            removed_files=removed,
            seconds=time.perf_counter() - t0,
            notes=tuple(counts.notes),
        )
        if on_progress:
            on_progress(self._progress(counts, "", done=True))
        log.info(
            "scanned %s: %d steps, %d files in %.2fs",
            self.root.path,
            result.steps,
            result.files,
            result.seconds,
        )
        return result

    def _progress(self, stats: WalkStats, path: str, done: bool = False) -> ScanProgress:
        return ScanProgress(
            root=self.root.path,
            dirs_seen=stats.dirs,
            files_seen=stats.files,
            bytes_seen=stats.bytes,
            steps_found=stats.steps,
            headers_read=stats.headers_read,
            current=path,
            done=done,
        )

    async def _write(self, steps: list[ScannedStep]) -> None:
        """Reconcile a batch of scanned steps in one transaction (none if nothing changed)."""
        seen_files = self.seen_files
        for s in steps:
            seen_files.update(s.seen)
        work = [s for s in steps if self._needs_write(s)]
        if not work:  # a re-scan of unchanged steps: nothing to write, no transaction
            for s in steps:
                tid = self.training_ids[s.training_relpath]
                self.seen_trainings.add(tid)
                self.seen_steps.add(self.step_ids[(tid, s.relpath)])
            return
        new_files: list[dict[str, Any]] = []
        async with self.db.sessions() as session, session.begin():
            new_steps: list[tuple[int, ScannedStep]] = []
            for s in steps:
                known_tid = self.training_ids.get(s.training_relpath)
                if known_tid is not None:
                    tid = known_tid
                else:
                    tid = (
                        await session.execute(
                            insert(Training)
                            .values(
                                root_id=self.root_id,
                                name=s.training_name,
                                relpath=s.training_relpath,
                            )
                            .returning(Training.id)
                        )
                    ).scalar_one()
                    self.training_ids[s.training_relpath] = tid
                self.seen_trainings.add(tid)
                sid = self.step_ids.get((tid, s.relpath))
                if sid is None:
                    new_steps.append((tid, s))
                    continue
                if not self._same_facts(sid, s):
                    await session.execute(
                        update(Step)
                        .where(Step.id == sid)
                        .values(problems=s.problems or None, config=s.config)
                    )
                self.seen_steps.add(sid)
            if new_steps:
                # Multi-row INSERT ... RETURNING, matched back by (training, relpath): asking
                # for parameter order makes SQLAlchemy fall back to a statement per row here.
                result = await session.execute(
                    insert(_STEPS_TABLE).returning(
                        _STEPS_TABLE.c.id, _STEPS_TABLE.c.training_id, _STEPS_TABLE.c.relpath
                    ),
                    [
                        {
                            "training_id": tid,
                            "step": s.step,
                            "dirname": s.dirname,
                            "relpath": s.relpath,
                            "pinned": False,
                            "unit": s.unit,
                            "problems": s.problems or None,
                            "config": s.config,
                        }
                        for tid, s in new_steps
                    ],
                )
                for sid, tid, rel in result.all():
                    self.step_ids[(tid, rel)] = sid
                    self.seen_steps.add(sid)
            for s in steps:
                if not s.files:
                    continue
                sid = self.step_ids[(self.training_ids[s.training_relpath], s.relpath)]
                for f in s.files:
                    if f.file_id is None:
                        new_files.append(_file_values(f, sid))
                        continue
                    seen_files.add(f.file_id)
                    # same content (only nlink or role changed): refresh those facts only
                    values = _stat_values(f) if f.header_reused else _file_values(f, None)
                    await session.execute(
                        update(FileRow).where(FileRow.id == f.file_id).values(**values)
                    )
            if new_files:
                # Rows inserted now are never "gone" at the end of this walk (a step
                # directory is visited once), so their ids are not needed: no RETURNING.
                if self.db.is_sqlite:
                    await _insert_files_sqlite(session, new_files)
                else:
                    await session.execute(insert(_FILES_TABLE), new_files)

    def _needs_write(self, s: ScannedStep) -> bool:
        if s.files:
            return True
        tid = self.training_ids.get(s.training_relpath)
        sid = None if tid is None else self.step_ids.get((tid, s.relpath))
        return sid is None or not self._same_facts(sid, s)

    def _same_facts(self, sid: int, s: ScannedStep) -> bool:
        """Whether the stored (problems, config) equal what the walk found."""
        stored = self.step_facts.get(sid)
        if stored is None:
            return False
        return _same_json(stored[0], s.problems or None) and _same_json(stored[1], s.config or None)

    async def _remove_missing(self, training_rel: str | None) -> int:
        """Drop rows for files, steps and trainings no longer on disk (active rows only)."""
        scope_trainings = (
            {t: i for t, i in self.training_ids.items() if t == training_rel}
            if training_rel is not None
            else self.training_ids
        )
        tids = set(scope_trainings.values())
        step_training = {s: t for (t, _), s in self.step_ids.items()}
        seen = self.seen_files
        gone_files = [
            fid
            for fid, sid in self.file_ids.items()
            if fid not in seen and step_training.get(sid) in tids
        ]
        gone_steps = [
            sid
            for (tid, _), sid in self.step_ids.items()
            if tid in tids and sid not in self.seen_steps
        ]
        gone_trainings = [tid for tid in tids if tid not in self.seen_trainings]
        if not (gone_files or gone_steps or gone_trainings):
            return 0
        async with self.db.sessions() as session, session.begin():
            for chunk in _chunks(gone_files, DELETE_CHUNK):
                await session.execute(
                    delete(FileRow).where(
                        FileRow.id.in_(chunk), FileRow.state == RowState.ACTIVE.value
                    )
                )
            for chunk in _chunks(gone_steps, DELETE_CHUNK):
                still = select(FileRow.step_id).where(FileRow.step_id.in_(chunk))
                await session.execute(delete(Step).where(Step.id.in_(chunk), Step.id.not_in(still)))
            for chunk in _chunks(gone_trainings, DELETE_CHUNK):
                still_t = select(Step.training_id).where(Step.training_id.in_(chunk))
                await session.execute(
                    delete(Training).where(Training.id.in_(chunk), Training.id.not_in(still_t))
                )
        return len(gone_files)


def _same_json(stored: Any, value: Any) -> bool:
    """Stored JSON (text on SQLite, already decoded by asyncpg on PostgreSQL; None or "null"
    when empty) against a value; empty == empty."""
    if stored is None or stored == "null":
        return value is None
    if not isinstance(stored, str):
        return bool((stored or None) == value)
    try:
        decoded = json.loads(stored)
    except ValueError:
        return False
    return bool((decoded or None) == value)


def _stat_values(f: ScannedFile) -> dict[str, Any]:
    return {
        "size_bytes": f.size,
        "disk_bytes": f.disk,
        "inode": f.inode,
        "dev": f.dev,
        "nlink": f.nlink,
        "mtime_ns": f.mtime_ns,
        "role": f.role,
    }


def _file_values(f: ScannedFile, step_id: int | None) -> dict[str, Any]:
    """Column values of a file row: ORM attribute names for an UPDATE, table keys (with
    ``step_id`` and ``state``) for the Core INSERT when ``step_id`` is given."""
    values = {
        "relpath": f.relpath,
        "layer": f.layer,
        "hook": f.hook,
        "size_bytes": f.size,
        "disk_bytes": f.disk,
        "inode": f.inode,
        "dev": f.dev,
        "nlink": f.nlink,
        "mtime_ns": f.mtime_ns,
        "status": f.status,
        "header": f.header,
        "error": f.error,
        "role": f.role,
    }
    if step_id is None:
        values["meta"] = f.meta
    else:
        values[_META_KEY] = f.meta
        values["step_id"] = step_id
        values["state"] = RowState.ACTIVE.value
    return values


_JSON_COLUMNS = frozenset({"header", _META_KEY})


async def _insert_files_sqlite(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """One driver-level executemany: SQLAlchemy's per-row parameter processing costs more
    than SQLite's insert itself on a first scan. JSON columns are encoded here, as the JSON
    type does with the engine's serializer (None stays NULL)."""
    keys = list(rows[0])
    sql = (
        f"INSERT INTO {_FILES_TABLE.name} ({', '.join(keys)}) "
        f"VALUES ({', '.join('?' for _ in keys)})"
    )
    dumps = json_text
    params = [
        tuple((None if r[k] is None else dumps(r[k])) if k in _JSON_COLUMNS else r[k] for k in keys)
        for r in rows
    ]
    conn = await session.connection()  # the session's transaction: one commit per batch
    await conn.exec_driver_sql(sql, params)


def _chunks(items: list[int], n: int) -> list[list[int]]:
    return [items[i : i + n] for i in range(0, len(items), n)]

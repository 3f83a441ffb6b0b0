"""Scan a root into the index: walk in a thread, reconcile in batches on the event loop.

Rows are committed as steps are found (so a face can browse during a scan), a transaction
per batch; files and steps gone from disk leave the index when the walk completes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ckpt_tui.db import Database, FileRow, Root, Step, Training
from ckpt_tui.fs import RootHandle
from ckpt_tui.types import RowState, ScanProgress, ScanResult
from ckpt_tui.walk import Known, ScannedStep, Walker, WalkStats

log = logging.getLogger(__name__)

BATCH_STEPS = 200  # steps reconciled per transaction
BATCH_SECONDS = 0.5  # or sooner, so rows appear while a slow walk goes on
TICK_SECONDS = 0.1  # progress callback rate limit
DELETE_CHUNK = 500  # ids per DELETE ... WHERE id IN (...)

ProgressFn = Callable[[ScanProgress], None]


class Scanner:
    def __init__(self, db: Database, root: RootHandle, root_id: int) -> None:
        self.db = db
        self.root = root
        self.root_id = root_id
        self.training_ids: dict[str, int] = {}
        self.step_ids: dict[tuple[int, str], int] = {}
        self.step_facts: dict[int, tuple[Any, Any]] = {}  # id -> (problems, config) as stored
        self.file_rows: dict[tuple[int, str], tuple[int, int, int, int, int]] = {}
        self.seen_files: set[int] = set()
        self.seen_steps: set[int] = set()
        self.seen_trainings: set[int] = set()

    async def _load(
        self, session: AsyncSession, training_rel: str | None
    ) -> dict[tuple[str, str], Known]:
        """Existing rows for this root: ids for reconciling, headers for reuse."""
        q = select(Training.id, Training.relpath).where(Training.root_id == self.root_id)
        for tid, rel in (await session.execute(q)).all():
            self.training_ids[rel] = tid
        q2 = (
            select(Step.id, Step.training_id, Step.relpath, Step.problems, Step.config)
            .join(Training)
            .where(Training.root_id == self.root_id)
        )
        for sid, tid, rel, problems, config in (await session.execute(q2)).all():
            self.step_ids[(tid, rel)] = sid
            self.step_facts[sid] = (problems or None, config or None)
        q3 = (
            select(
                FileRow.id,
                FileRow.step_id,
                FileRow.relpath,
                FileRow.inode,
                FileRow.size_bytes,
                FileRow.mtime_ns,
                FileRow.status,
                FileRow.header,
                FileRow.meta,
                FileRow.error,
                Step.relpath,
                FileRow.nlink,
            )
            .join(Step, FileRow.step_id == Step.id)
            .join(Training, Step.training_id == Training.id)
            .where(Training.root_id == self.root_id)
        )
        if training_rel is not None:
            q3 = q3.where(Training.relpath == training_rel)
        known: dict[tuple[str, str], Known] = {}
        for r in (await session.execute(q3)).all():
            self.file_rows[(r[1], r[2])] = (r[0], r[3], r[4], r[5], r[11])
            known[(r[10], r[2])] = Known(r[3], r[4], r[5], r[6], r[7], r[8], r[9])
        return known

    async def run(
        self,
        on_progress: ProgressFn | None = None,
        training_rel: str | None = None,
        cancel: threading.Event | None = None,
    ) -> ScanResult:
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ScannedStep | None] = asyncio.Queue()
        async with self.db.sessions() as session:
            known = await self._load(session, training_rel)
        last_tick = [0.0]
        current = [""]
        counts = WalkStats()

        def emit(step: ScannedStep) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, step)

        def tick(stats: WalkStats, path: str) -> None:
            now = time.monotonic()
            current[0] = path
            if on_progress and now - last_tick[0] >= TICK_SECONDS:
                last_tick[0] = now
                p = self._progress(stats, path)
                loop.call_soon_threadsafe(on_progress, p)

        walker = Walker(
            self.root.path,
            known,
            emit,
            tick,
            cancelled=(cancel.is_set if cancel else lambda: False),
        )
        start = tuple(training_rel.split("/")) if training_rel else ()

        def run_walk() -> WalkStats:
            try:
                return walker.walk(start)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        walk_task = asyncio.ensure_future(asyncio.to_thread(run_walk))
        pending: list[ScannedStep] = []
        batch_started = time.monotonic()
        while True:
            item = await queue.get()
            if item is not None:
                pending.append(item)
            flush = (
                item is None
                or len(pending) >= BATCH_STEPS
                or (time.monotonic() - batch_started >= BATCH_SECONDS)
            )
            if flush and pending:
                await self._write(pending)
                pending = []
                batch_started = time.monotonic()
                if on_progress:
                    on_progress(self._progress(walker.stats, current[0]))
            if item is None:
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
        """Reconcile a batch of scanned steps in one transaction."""
        new_files: list[dict[str, Any]] = []
        async with self.db.sessions() as session, session.begin():
            for s in steps:
                tid = self.training_ids.get(s.training_relpath)
                if tid is None:
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
                    sid = (
                        await session.execute(
                            insert(Step)
                            .values(
                                training_id=tid,
                                step=s.step,
                                dirname=s.dirname,
                                relpath=s.relpath,
                                pinned=False,
                                unit=s.unit,
                                problems=s.problems or None,
                                config=s.config,
                            )
                            .returning(Step.id)
                        )
                    ).scalar_one()
                    self.step_ids[(tid, s.relpath)] = sid
                elif self.step_facts.get(sid) != (s.problems or None, s.config or None):
                    await session.execute(
                        update(Step)
                        .where(Step.id == sid)
                        .values(problems=s.problems or None, config=s.config)
                    )
                self.seen_steps.add(sid)
                for f in s.files:
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
                        "meta": f.meta,
                        "error": f.error,
                    }
                    existing = self.file_rows.get((sid, f.relpath))
                    if existing is None:
                        new_files.append({"step_id": sid, "state": RowState.ACTIVE.value, **values})
                        continue
                    fid, *identity = existing
                    self.seen_files.add(fid)
                    if f.header_read or identity != [f.inode, f.size, f.mtime_ns, f.nlink]:
                        await session.execute(
                            update(FileRow).where(FileRow.id == fid).values(**values)
                        )
            if new_files:
                await session.execute(insert(FileRow), new_files)
        if new_files:
            # Learn the ids of the rows just inserted, so a later batch never re-inserts them.
            async with self.db.sessions() as session:
                sids = {r["step_id"] for r in new_files}
                for chunk in _chunks(sorted(sids), DELETE_CHUNK):
                    q = select(
                        FileRow.id,
                        FileRow.step_id,
                        FileRow.relpath,
                        FileRow.inode,
                        FileRow.size_bytes,
                        FileRow.mtime_ns,
                        FileRow.nlink,
                    ).where(FileRow.step_id.in_(chunk))
                    for fid, sid, rel, ino, size, mtime, nlink in (await session.execute(q)).all():
                        self.file_rows[(sid, rel)] = (fid, ino, size, mtime, nlink)
                        self.seen_files.add(fid)

    async def _remove_missing(self, training_rel: str | None) -> int:
        """Drop rows for files, steps and trainings no longer on disk (active rows only)."""
        scope_trainings = (
            {t: i for t, i in self.training_ids.items() if t == training_rel}
            if training_rel is not None
            else self.training_ids
        )
        tids = set(scope_trainings.values())
        step_training = {s: t for (t, _), s in self.step_ids.items()}
        gone_files = [
            fid
            for (sid, _), (fid, *_r) in self.file_rows.items()
            if fid not in self.seen_files and step_training.get(sid) in tids
        ]
        gone_steps = [
            sid
            for (tid, _), sid in self.step_ids.items()
            if tid in tids and sid not in self.seen_steps
        ]
        gone_trainings = [tid for tid in tids if tid not in self.seen_trainings]
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


def _chunks(items: list[int], n: int) -> list[list[int]]:
    return [items[i : i + n] for i in range(0, len(items), n)]

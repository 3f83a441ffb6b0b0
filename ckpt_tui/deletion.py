"""Carry out a Plan under the deletion contract, and finish deletions a crash interrupted.

For each batch: claim the rows (``state='deleting'``, committed and synced) before any unlink;
unlink and collapse in a thread through directory fds; then, in one transaction, drop the rows
of what went and keep the rows, with the error, of what did not. A lock file held for the
whole run serialises deleters on this machine.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ckpt_tui import fs, history, layout
from ckpt_tui.db import Database, FileRow, Root, Step, Training
from ckpt_tui.db.claim import deletion_claim
from ckpt_tui.db.engine import describe_error, is_locked_error
from ckpt_tui.errors import IndexBusy, IndexError_, RootError
from ckpt_tui.procfs import open_files
from ckpt_tui.types import (
    DeleteProgress,
    ExecuteResult,
    FileStatus,
    Interrupted,
    ItemResult,
    Outcome,
    Plan,
    PlannedFile,
    PlannedStep,
    RowState,
)

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05  # progress is handed from the deleting thread to the loop this often
FIRST_BATCH_FILES = 64  # files claimed by the first transaction of a run
BATCH_FILES = 4000  # at most this many files claimed per transaction
CHUNK = 500  # ids per IN (...) clause
REFUSED = "refused: the index row is not a valid path inside the root"

ProgressFn = Callable[[DeleteProgress], None]


@contextmanager
def deletion_lock(db: Database, *, wait: bool = False) -> Iterator[None]:
    """Exclusive lock for deleting through this index; IndexBusy if another process holds it."""
    db.lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise IndexBusy(
                f"index {db.display} is busy: another ckpt-tui is deleting; try again when it "
                "finishes"
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass
class _Run:
    """Mutable tallies of one execute() call."""

    total_files: int
    total_bytes: int
    results: list[ItemResult] = field(default_factory=list)
    removed_dirs: list[str] = field(default_factory=list)
    removed_steps: list[int] = field(default_factory=list)
    freed: int = 0
    freed_disk: int = 0
    appeared: list[str] = field(default_factory=list)


class Deleter:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def execute(
        self,
        plan: Plan,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        *,
        allow_open: bool = False,
        ctx: history.RunContext | None = None,
    ) -> ExecuteResult:
        """Carry out ``plan``; first finish what an interrupted deletion committed to (a
        deleting command does, read-only ones never). Every run is recorded (``history``)."""
        t0 = time.perf_counter()
        cancel = cancel or threading.Event()
        run = _Run(plan.file_count, plan.bytes)
        stopped: str | None = None
        if plan.empty and await self.interrupted() is None:
            return ExecuteResult((), (), (), 0, seconds=0.0)
        root = await self._root_handle(plan.root_id, plan.root)
        recovered = 0
        foreign_steps = {f.step_id for f in plan.foreign}
        known = _known_files(plan)
        async with deletion_claim(self.db):
            with deletion_lock(self.db):
                run_id = await history.start(self.db, plan, ctx or history.RunContext())
                try:
                    recovered = await self._recover_locked(run_id)
                    busy = {} if allow_open else await asyncio.to_thread(open_files)
                    for batch in _batches(plan.steps):
                        if cancel.is_set():
                            break
                        claimed = await self._claim(
                            [f.file_id for s in batch for f in s.files], run_id
                        )
                        stopped = await self._run_batch(
                            root,
                            batch,
                            claimed,
                            busy,
                            run,
                            on_progress,
                            cancel,
                            record={s.step_id: run_id for s in batch},
                            foreign_steps=foreign_steps,
                            known=known,
                        )
                        if stopped:
                            break
                    if plan.training_dirs and not stopped and not cancel.is_set():
                        stopped = await self._remove_training_dirs(root, plan, run, on_progress)
                except Exception:
                    await _quietly(history.finish(self.db, run_id, None, "failed"))
                    raise
        skipped = {r.file_id for r in run.results}
        for s in plan.steps:
            for f in s.files:
                if f.file_id not in skipped:
                    run.results.append(
                        ItemResult(
                            f.file_id,
                            s.step_id,
                            _abs(plan.root, f),
                            Outcome.SKIPPED,
                            error=stopped or "cancelled",
                        )
                    )
        result = ExecuteResult(
            results=tuple(run.results),
            removed_dirs=tuple(run.removed_dirs),
            removed_step_ids=tuple(run.removed_steps),
            freed_bytes=run.freed,
            cancelled=cancel.is_set() and stopped is None,
            stopped=stopped,
            seconds=time.perf_counter() - t0,
            freed_disk_bytes=run.freed_disk,
            recovered=recovered,
            appeared=tuple(run.appeared),
            run_id=run_id,
        )
        await history.finish(self.db, run_id, result, history.outcome_of(result))
        return result

    async def _remove_training_dirs(
        self, root: fs.RootHandle, plan: Plan, run: _Run, on_progress: ProgressFn | None
    ) -> str | None:
        """rmdir-if-empty the folders above a training's steps once all of them went."""
        try:
            removed = await asyncio.to_thread(fs.remove_empty_dirs, root, list(plan.training_dirs))
        except fs.StopBatch as stop:
            return f"stopped: {stop}; run again to resume"
        if removed:
            run.removed_dirs += removed
            if on_progress is not None:
                on_progress(
                    DeleteProgress(
                        None,
                        len(run.results),
                        run.total_files,
                        run.freed,
                        run.total_bytes,
                        tuple(removed),
                        (),
                    )
                )
        return None

    async def _root_handle(self, root_id: int, root_path: str) -> fs.RootHandle:
        async with self.db.sessions() as session:
            row = await session.get(Root, root_id)
        if row is None or row.path != root_path:
            raise RootError(f"root {root_path} is not in the index")
        handle = fs.check_root(row.path)
        if (handle.dev, handle.ino) != (row.dev, row.ino):
            raise RootError(f"root {row.path} was replaced since it was scanned; scan it again")
        return handle

    async def _claim(self, file_ids: list[int], run_id: int | None = None) -> set[int]:
        """Mark active rows ``deleting`` and commit: the durable intent before any unlink."""
        claimed: set[int] = set()
        try:
            async with self.db.sessions() as session, session.begin():
                for i in range(0, len(file_ids), CHUNK):
                    chunk = file_ids[i : i + CHUNK]
                    q = (
                        update(FileRow)
                        .where(FileRow.id.in_(chunk), FileRow.state == RowState.ACTIVE.value)
                        .values(
                            state=RowState.DELETING.value, claimed_at=time.time(), claimed_by=run_id
                        )
                        .returning(FileRow.id)
                    )
                    claimed.update((await session.execute(q)).scalars())
        except (DBAPIError, SQLAlchemyError) as exc:
            if is_locked_error(exc):
                raise IndexBusy(f"index {self.db.display} is locked; nothing was deleted") from None
            raise IndexError_(
                f"cannot record the deletion in index {self.db.display}: "
                f"{describe_error(exc)}; nothing was deleted"
            ) from None
        return claimed

    async def _run_batch(
        self,
        root: fs.RootHandle,
        batch: list[PlannedStep],
        claimed: set[int],
        busy: dict[tuple[int, int], str],
        run: _Run,
        on_progress: ProgressFn | None,
        cancel: threading.Event,
        *,
        record: dict[int, int] | None = None,
        foreign_steps: set[int] | None = None,
        recovering: bool = False,
        known: dict[int, set[str]] | None = None,
    ) -> str | None:
        """Unlink one claimed batch in a thread, then finish it in the index; ``record``
        maps each step to the history run its result is written to."""
        loop = asyncio.get_running_loop()
        step_of = {f.file_id: s.step_id for s in batch for f in s.files}
        dev = root.dev
        batch_results: list[ItemResult] = []
        work: list[tuple[tuple[str, ...], list[PlannedFile], bool]] = []
        for s in batch:
            files = []
            for f in s.files:
                if _malformed(f):
                    batch_results.append(
                        ItemResult(
                            f.file_id, s.step_id, repr(f.relparts), Outcome.FAILED, error=REFUSED
                        )
                    )
                    continue
                path = _abs(root.path, f)
                if f.file_id not in claimed:
                    batch_results.append(
                        ItemResult(
                            f.file_id,
                            s.step_id,
                            path,
                            Outcome.SKIPPED,
                            error="no longer in the index, or claimed by another deleter",
                        )
                    )
                elif (dev, f.inode) in busy:
                    batch_results.append(
                        ItemResult(
                            f.file_id,
                            s.step_id,
                            path,
                            Outcome.FAILED,
                            error=f"open in {busy[(dev, f.inode)]}",
                        )
                    )
                else:
                    files.append(f)
            # a step goes whole only if every planned file is still being deleted
            work.append((s.relparts, files, s.whole and len(files) == len(s.files)))
        run.results += batch_results

        def report(item: ItemResult | None, dirs: tuple[str, ...], steps: tuple[int, ...]) -> None:
            if on_progress is not None:
                on_progress(
                    DeleteProgress(
                        item,
                        len(run.results),
                        run.total_files,
                        run.freed,
                        run.total_bytes,
                        dirs,
                        steps,
                    )
                )

        # The thread hands results to the loop in bundles, at most every FLUSH_SECONDS: one
        # wake-up per file would cost as much as the unlinks themselves (GIL ping-pong).
        pending: list[tuple[ItemResult | None, list[str], int | None]] = []
        last_flush = [time.monotonic()]

        def deliver(events: list[tuple[ItemResult | None, list[str], int | None]]) -> None:
            for item, removed, gone_step in events:
                if item is not None:
                    _record(run, item, report)
                else:
                    _record_dirs(run, removed, gone_step, report)

        def flush(force: bool = False) -> None:
            now = time.monotonic()
            if pending and (force or now - last_flush[0] >= FLUSH_SECONDS):
                events = pending[:]
                pending.clear()
                last_flush[0] = now
                loop.call_soon_threadsafe(deliver, events)

        def on_file(o: fs.FileOutcome) -> None:
            item = ItemResult(
                o.file.file_id,
                step_of[o.file.file_id],
                _abs(root.path, o.file),
                o.outcome,
                o.freed_bytes,
                o.error,
                o.freed_disk_bytes,
            )
            batch_results.append(item)
            pending.append((item, [], None))
            flush()

        step_by_parts = {s.relparts: s.step_id for s in batch}

        def on_dirs(step_parts: tuple[str, ...], removed: list[str]) -> None:
            step_path = os.path.join(root.path, *step_parts)
            sid = step_by_parts[step_parts]
            if step_path in removed:
                removed_steps.add(sid)
            pending.append((None, removed, sid if step_path in removed else None))
            flush()

        removed_steps: set[int] = set()
        stopped: str | None = None
        try:
            await asyncio.to_thread(fs.delete_steps, root, work, on_file, on_dirs, cancel.is_set)
        except fs.StopBatch as stop:
            stopped = f"stopped: {stop}; nothing after it was touched, run again to resume"
            log.error("deletion %s", stopped)
        except RootError as err:
            stopped = str(err)
        deliver(pending)  # what the thread had not handed over yet, in order
        pending.clear()
        await asyncio.sleep(0)  # and let its last bundle run
        if not stopped and known is not None:
            run.appeared += await asyncio.to_thread(_appeared, root, batch, removed_steps, known)
        rows: list[dict[str, object]] = []
        for run_id, steps in _group(batch, record or {}).items():
            rows += history.step_rows(
                run_id,
                root.path,
                steps,
                batch_results,
                removed_steps,
                foreign_steps or set(),
                credit_gone=recovering,
            )
        await self._finish(root, batch, batch_results, claimed, removed_steps, rows)
        return stopped

    async def _finish(
        self,
        root: fs.RootHandle,
        batch: list[PlannedStep],
        results: list[ItemResult],
        claimed: set[int],
        removed_steps: set[int] | None = None,
        history_rows: list[dict[str, object]] | None = None,
    ) -> None:
        """One transaction: drop rows of what went, keep (with the error) rows of what did not,
        and record each step's result in the history."""
        gone = [r.file_id for r in results if r.outcome in (Outcome.DELETED, Outcome.ALREADY_GONE)]
        errors = {
            r.file_id: r.error
            for r in results
            if r.outcome in (Outcome.FAILED, Outcome.CHANGED) and r.file_id in claimed
        }
        untouched = claimed - set(gone) - set(errors)
        async with self.db.sessions() as session, session.begin():
            for i in range(0, len(gone), CHUNK):
                await session.execute(delete(FileRow).where(FileRow.id.in_(gone[i : i + CHUNK])))
            for fid, err in errors.items():
                await session.execute(
                    update(FileRow)
                    .where(FileRow.id == fid)
                    .values(state=RowState.ACTIVE.value, error=err)
                )
            ids = sorted(untouched)
            for i in range(0, len(ids), CHUNK):
                await session.execute(
                    update(FileRow)
                    .where(FileRow.id.in_(ids[i : i + CHUNK]))
                    .values(state=RowState.ACTIVE.value)
                )
            await history.add_steps(session, history_rows or [])
            await self._drop_vanished_steps(
                session, root, [s.step_id for s in batch], removed_steps or set()
            )

    async def _drop_vanished_steps(
        self, session: object, root: fs.RootHandle, step_ids: list[int], removed: set[int]
    ) -> None:
        """Drop step rows with no files whose directory is gone; then trainings with no steps."""
        from sqlalchemy.ext.asyncio import AsyncSession

        assert isinstance(session, AsyncSession)
        has_files = exists().where(FileRow.step_id == Step.id)
        q = select(Step.id, Step.relpath, Step.training_id).where(Step.id.in_(step_ids), ~has_files)
        empty = (await session.execute(q)).all()
        # a step directory this run removed is gone; only the others need a look on disk
        drop = [sid for sid, rel, _ in empty if sid in removed or not _dir_exists(root, rel)]
        if drop:
            await session.execute(delete(Step).where(Step.id.in_(drop)))
            tids = {tid for sid, _, tid in empty if sid in drop}
            has_steps = exists().where(Step.training_id == Training.id)
            await session.execute(delete(Training).where(Training.id.in_(tids), ~has_steps))

    async def recover(self, *, strict: bool = False) -> int:
        """Finish deletions that an earlier run committed to but did not complete.

        Skipped when another process holds the deletion lock (it is still working on them);
        ``strict`` raises IndexBusy instead.
        """
        rows = await self._deleting_rows()
        if not rows:
            return 0
        try:
            async with deletion_claim(self.db):
                with deletion_lock(self.db):
                    return await self._recover_locked(None)
        except IndexBusy:
            if strict:
                raise
            log.info("another deleter holds the lock; leaving %d rows to it", len(rows))
            return 0

    async def _recover_locked(self, by_run: int | None) -> int:
        """``recover`` for a caller that already holds the deletion lock and claim; the runs
        that were interrupted are linked to ``by_run``, the steps finished now are recorded
        in the run that claimed them."""
        rows = await self._deleting_rows()
        done = await self._recover_rows(rows) if rows else 0
        async with self.db.sessions() as session, session.begin():
            await history.link_interrupted(session, by_run)
        return done

    async def _deleting_rows(self) -> list[tuple[object, ...]]:
        async with self.db.sessions() as session:
            q = (
                select(
                    FileRow.id,
                    FileRow.relpath,
                    FileRow.size_bytes,
                    FileRow.disk_bytes,
                    FileRow.inode,
                    FileRow.mtime_ns,
                    FileRow.nlink,
                    FileRow.status,
                    Step.id,
                    Step.step,
                    Step.relpath,
                    Training.id,
                    Training.name,
                    Training.root_id,
                    FileRow.claimed_by,
                )
                .join(Step, Step.id == FileRow.step_id)
                .join(Training, Training.id == Step.training_id)
                .where(FileRow.state == RowState.DELETING.value)
            )
            return [tuple(r) for r in (await session.execute(q)).all()]

    async def interrupted(self) -> Interrupted | None:
        """What an interrupted deletion left claimed (read-only: nothing is touched)."""
        return await history.pending(self.db)

    async def _recover_rows(self, rows: list[tuple[object, ...]]) -> int:
        by_root: dict[int, dict[int, list[tuple[object, ...]]]] = {}
        for r in rows:
            by_root.setdefault(int(str(r[13])), {}).setdefault(int(str(r[8])), []).append(r)
        done = 0
        for root_id, steps in by_root.items():
            async with self.db.sessions() as session:
                root_row = await session.get(Root, root_id)
            if root_row is None:
                continue
            try:
                root = fs.check_root(root_row.path)
            except RootError as err:
                log.warning("cannot finish interrupted deletions under %s: %s", root_row.path, err)
                continue
            batch: list[PlannedStep] = []
            unsafe: list[int] = []
            for sid, rs in steps.items():
                files = []
                for r in rs:
                    planned = _planned_from_row(r)
                    if planned is None:
                        unsafe.append(int(str(r[0])))
                        continue
                    files.append(planned)
                first = rs[0]
                step_parts = layout.split_relpath(first[10]) if isinstance(first[10], str) else None
                if step_parts is None:
                    continue  # every file of it was refused above
                step_no = int(str(first[9])) if _is_int(first[9]) else -1
                batch.append(
                    PlannedStep(
                        sid,
                        str(first[12]),
                        int(str(first[11])),
                        step_no,
                        os.path.join(root.path, *step_parts),
                        step_parts,
                        tuple(files),
                        False,
                    )
                )
            run = _Run(sum(len(s.files) for s in batch), 0)
            claimed = {f.file_id for s in batch for f in s.files}
            record = {sid: int(str(rs[0][14])) for sid, rs in steps.items() if _is_int(rs[0][14])}
            await self._run_batch(
                root,
                batch,
                claimed,
                {},
                run,
                None,
                threading.Event(),
                record=record,
                recovering=True,
            )
            if unsafe:
                async with self.db.sessions() as session, session.begin():
                    await session.execute(
                        update(FileRow)
                        .where(FileRow.id.in_(unsafe))
                        .values(state=RowState.ACTIVE.value, error=REFUSED)
                    )
            done += len(claimed)
            log.info("finished %d interrupted deletions under %s", len(claimed), root.path)
        return done


def _known_files(plan: Plan) -> dict[int, set[str]]:
    """Per step whose every indexed file is planned or listed as foreign: those paths. What
    else is left in such a step folder after the run appeared since the scan."""
    foreign: dict[int, set[str]] = {}
    for f in plan.foreign:
        foreign.setdefault(f.step_id, set()).add(f.path)
    out: dict[int, set[str]] = {}
    for s in plan.steps:
        paths = {os.path.join(plan.root, *f.relparts) for f in s.files} | foreign.get(
            s.step_id, set()
        )
        if len(paths) >= s.indexed_files:
            out[s.step_id] = paths
    return out


def _appeared(
    root: fs.RootHandle,
    batch: list[PlannedStep],
    removed: set[int],
    known: dict[int, set[str]],
) -> list[str]:
    """Files left in the batch's step folders that the index never knew (blocking)."""
    out: list[str] = []
    for s in batch:
        if s.step_id in removed or s.step_id not in known:
            continue
        for parts in fs.list_files(root, s.relparts):
            path = os.path.join(root.path, *parts)
            if path not in known[s.step_id]:
                out.append(path)
    return out


def _group(batch: list[PlannedStep], record: dict[int, int]) -> dict[int, list[PlannedStep]]:
    """The batch's steps by the history run each is recorded in (unrecorded ones left out)."""
    out: dict[int, list[PlannedStep]] = {}
    for s in batch:
        run_id = record.get(s.step_id)
        if run_id is not None:
            out.setdefault(run_id, []).append(s)
    return out


async def _quietly(coro: Coroutine[object, object, None]) -> None:
    """Best effort (recording a failure must not hide the failure itself)."""
    try:
        await coro
    except Exception:
        log.warning("could not record the failed run in the history", exc_info=True)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _planned_from_row(r: tuple[object, ...]) -> PlannedFile | None:
    """A PlannedFile from a recovered ``deleting`` row, or None if the row is malformed.

    A hand-edited or damaged index may hold any type in any column: such a row is refused
    (kept, with an error) rather than crashing every later open or being acted on.
    """
    fid, rel, size, disk, inode, mtime, nlink, status = r[:8]
    step_rel = r[10]
    if not (isinstance(rel, str) and isinstance(step_rel, str)):
        return None
    if not all(_is_int(v) for v in (fid, size, disk, inode, mtime, nlink)):
        return None
    parts = layout.validate_file_record(step_rel, rel)
    if parts is None:
        return None
    assert _is_int(fid) and _is_int(size) and _is_int(disk)  # narrowed above, for mypy
    return PlannedFile(
        int(str(fid)),
        parts,
        int(str(size)),
        int(str(disk)),
        int(str(inode)),
        int(str(mtime)),
        int(str(nlink)),
        status == FileStatus.SYMLINK,
    )


def _malformed(f: PlannedFile) -> bool:
    """A plan entry whose fields are not what the deleter needs to act on it safely."""
    for v in (f.file_id, f.size_bytes, f.disk_bytes, f.inode, f.mtime_ns, f.nlink):
        if type(v) is not int:  # exact type: bools and int subclasses are refused too
            return True
    parts = f.relparts
    if type(parts) is not tuple or not parts:
        return True
    # every component checked; not through split_relpath's cache, which would fill with
    # one entry per file of a large run
    return not all(type(p) is str and layout.is_safe_component(p) for p in parts)


def _record(
    run: _Run,
    item: ItemResult,
    report: Callable[[ItemResult | None, tuple[str, ...], tuple[int, ...]], None],
) -> None:
    run.results.append(item)
    run.freed += item.freed_bytes
    run.freed_disk += item.freed_disk_bytes
    report(item, (), ())


def _record_dirs(
    run: _Run,
    removed: list[str],
    step_id: int | None,
    report: Callable[[ItemResult | None, tuple[str, ...], tuple[int, ...]], None],
) -> None:
    run.removed_dirs += removed
    steps: tuple[int, ...] = ()
    if step_id is not None:
        run.removed_steps.append(step_id)
        steps = (step_id,)
    if removed:
        report(None, tuple(removed), steps)


def _abs(root: str, f: PlannedFile) -> str:
    try:
        return os.path.join(root, *f.relparts)
    except TypeError:  # a malformed entry: shown, never acted on
        return f"{root}/{f.relparts!r}"


def _dir_exists(root: fs.RootHandle, relpath: str) -> bool:
    parts = layout.split_relpath(relpath)
    if parts is None:
        return True  # cannot judge an unsafe row: keep it
    try:
        with fs.open_root(root) as fd:
            cur = fd
            opened: list[int] = []
            try:
                for p in parts:
                    cur = fs.open_dir_at(cur, p, root.dev)
                    opened.append(cur)
            finally:
                for o in opened:
                    os.close(o)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _batches(steps: tuple[PlannedStep, ...]) -> Iterator[list[PlannedStep]]:
    """Whole steps per batch: small at first (the first rows vanish at once), then doubling
    up to BATCH_FILES, so a large run costs few durable commits."""
    batch: list[PlannedStep] = []
    n = 0
    size = FIRST_BATCH_FILES
    for s in steps:
        batch.append(s)
        n += len(s.files)
        if n >= size:
            yield batch
            batch, n = [], 0
            size = min(size * 2, BATCH_FILES)
    if batch:
        yield batch

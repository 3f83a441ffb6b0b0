"""Carry out a Plan under the deletion contract, and finish deletions a crash interrupted.

For each batch: claim the rows (``state='deleting'``, committed and synced) before any unlink;
unlink and collapse in a thread through directory fds; then, in one transaction, drop the rows
of what went and keep the rows, with the error, of what did not. A lock file held for the
whole run serialises deleters on this machine.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ckpt_tui import fs, history, layout
from ckpt_tui.db import Database, FileRow, Meta, Root, Step, Training
from ckpt_tui.db.claim import deletion_claim
from ckpt_tui.db.engine import check_integrity, describe_error, is_locked_error
from ckpt_tui.errors import CkptError, IndexBusy, IndexError_, RootError
from ckpt_tui.procfs import holder, open_files
from ckpt_tui.types import (
    MISTUDIO_PENDING,
    DeleteProgress,
    ExecuteResult,
    FileStatus,
    Interrupted,
    ItemResult,
    MiStudioOutcome,
    MiStudioPlan,
    MiStudioRow,
    Outcome,
    Plan,
    PlannedFile,
    PlannedStep,
    RowState,
)

if TYPE_CHECKING:  # imported on use, only with a miStudio database (--mistudio)
    from ckpt_tui.mistudio import MiStudio

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05  # progress is handed from the deleting thread to the loop this often
FIRST_BATCH_FILES = 64  # files claimed by the first transaction of a run
BATCH_FILES = 4000  # at most this many files claimed per transaction
CHUNK = 500  # ids per IN (...) clause
REFUSED = "refused: the index row is not a valid path inside the root"
GONE = (Outcome.DELETED, Outcome.ALREADY_GONE)

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


@dataclass
class _MiTally:
    """What one run did to miStudio's rows."""

    rows_deleted: int = 0
    rows_kept: int = 0
    stale_deleted: int = 0
    repaired: int = 0
    error: str | None = None


class Deleter:
    def __init__(self, db: Database, mistudio: MiStudio | None = None) -> None:
        self.db = db
        self.mistudio = mistudio  # rows of deleted files are deleted there, after the files

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
        deleting command does, read-only ones never). Every run is recorded (``history``).

        With miStudio: its database is checked (reachable, schema, DELETE rights) before
        anything is touched; rows an interrupted run left are deleted first; per batch, the
        rows' intent is committed with the claim, each step is checked again (an active
        training or a best step since the plan is skipped), and after the index transaction
        the rows of every step whose planned files are all gone go in one transaction (a
        step with a failed unlink keeps every row); stale rows last."""
        t0 = time.perf_counter()
        cancel = cancel or threading.Event()
        run = _Run(plan.file_count, plan.bytes)
        stopped: str | None = None
        mi = await self._mistudio_ready(plan)
        tally = _MiTally()
        mi_plan = plan.mistudio if mi is not None else None
        stale_work = mi_plan is not None and bool(mi_plan.stale)
        if (
            plan.empty
            and not stale_work
            and await self.interrupted() is None
            and not (mi is not None and await self._journals(mi))
        ):
            return ExecuteResult((), (), (), 0, seconds=0.0, mistudio=_outcome(mi, tally))
        root = await self._root_handle(plan.root_id, plan.root)
        by_step = _rows_by_step(mi_plan)
        recovered = 0
        foreign_steps = {f.step_id for f in plan.foreign}
        known = _known_files(plan)
        async with deletion_claim(self.db):
            with deletion_lock(self.db):
                await check_integrity(self.db)
                run_id = await self._start_record(plan, ctx)
                try:
                    recovered = await self._recover_locked(run_id)
                    if mi is not None:
                        tally.repaired = await self._mistudio_repair(mi)
                    busy = {} if allow_open else await asyncio.to_thread(open_files)
                    for n, batch in enumerate(_batches(plan.steps)):
                        if cancel.is_set():
                            break
                        if mi is not None and mi_plan is not None and not mi_plan.force:
                            try:
                                batch, refused = await self._mistudio_recheck(
                                    mi, plan, mi_plan, batch, by_step
                                )
                            except CkptError as err:
                                stopped = f"{err}; nothing after it was touched, run again"
                                tally.error = str(err)
                                break
                            run.results += refused
                            if not batch:
                                continue
                        journal = _journal(mi, run_id, n, plan.root, batch, by_step)
                        done: list[ItemResult] = []
                        try:
                            claimed = await self._claim(
                                [f.file_id for s in batch for f in s.files], run_id, journal
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
                                into=done,
                            )
                        except _IndexStop as stop:
                            deleted = _deleted(run)
                            if not deleted and not stop.unrecorded:
                                raise
                            stopped = stop.mid_run(deleted)
                            break
                        if mi is not None and journal is not None:
                            failed = await self._mistudio_after(
                                mi, journal[0], batch, by_step, done, tally
                            )
                            stopped = stopped or failed
                        if stopped:
                            break
                    if mi is not None and stale_work and not stopped and not cancel.is_set():
                        assert mi_plan is not None
                        stopped = await self._mistudio_stale(mi, mi_plan, tally)
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
            mistudio=_outcome(mi, tally),
        )
        try:
            await history.finish(self.db, run_id, result, history.outcome_of(result))
        except (DBAPIError, SQLAlchemyError) as exc:  # the next deleting command closes it
            log.warning("could not record the run's outcome in the history: %s", _why(exc))
        return result

    # miStudio ---------------------------------------------------------------------------

    async def _mistudio_ready(self, plan: Plan) -> MiStudio | None:
        """The miStudio database this run deletes rows from, checked before anything is
        touched (reachable, its schema, DELETE rights); a MiStudioError otherwise."""
        mi, mi_plan = self.mistudio, plan.mistudio
        if mi is None and mi_plan is None:
            return None
        from ckpt_tui.mistudio import MiStudioError

        if mi is None:
            assert mi_plan is not None
            raise MiStudioError(
                f"the plan deletes rows of miStudio database {mi_plan.database}, which is not "
                "open here (--mistudio); nothing was deleted"
            )
        if mi_plan is not None and mi_plan.database != mi.display:
            raise MiStudioError(
                f"the plan was made against miStudio database {mi_plan.database}, not "
                f"{mi.display}; nothing was deleted"
            )
        await mi.check(write=True)
        return mi

    async def _mistudio_recheck(
        self,
        mi: MiStudio,
        plan: Plan,
        mi_plan: MiStudioPlan,
        batch: list[PlannedStep],
        by_step: dict[int, list[MiStudioRow]],
    ) -> tuple[list[PlannedStep], list[ItemResult]]:
        """Just before a batch's unlinks: a step whose training became active, or whose
        rows became best, since the plan is skipped (reported, every file kept)."""
        from ckpt_tui.mistudio import ACTIVE, BEST, active_reason

        links = dict(mi_plan.trainings)
        names = {links[s.step_id] for s in batch if s.step_id in links}
        if not names:
            return batch, []
        rows = [r.id for s in batch for r in by_step.get(s.step_id, ())]
        statuses, best = await mi.current(names, rows)
        keep: list[PlannedStep] = []
        refused: list[ItemResult] = []
        for s in batch:
            name = links.get(s.step_id)
            why = None
            status = statuses.get(name, "") if name is not None else ""
            if status in ACTIVE:
                why = f"{active_reason(status)} (since the plan was made); not deleted"
            elif any(r.id in best for r in by_step.get(s.step_id, ())):
                why = f"{BEST} (since the plan was made); not deleted"
            if why is None:
                keep.append(s)
                continue
            log.warning("skipped %s: %s", s.path, why)
            refused += [
                ItemResult(f.file_id, s.step_id, _abs(plan.root, f), Outcome.SKIPPED, error=why)
                for f in s.files
            ]
        return keep, refused

    async def _mistudio_after(
        self,
        mi: MiStudio,
        key: str,
        batch: list[PlannedStep],
        by_step: dict[int, list[MiStudioRow]],
        results: list[ItemResult],
        tally: _MiTally,
    ) -> str | None:
        """After the batch's index transaction: delete, in one miStudio transaction, the
        rows of each step every planned file of which is gone; keep every row of the
        others. Then drop the batch's intent. A failure stops the run (rows reported)."""
        outcome = {r.file_id: r.outcome for r in results}
        pairs: list[tuple[str, str]] = []
        for s in batch:
            rows = by_step.get(s.step_id)
            if not rows:
                continue
            if all(outcome.get(f.file_id) in GONE for f in s.files):
                pairs += [(r.id, r.storage_path) for r in rows]
            else:
                tally.rows_kept += len(rows)
        try:
            tally.rows_deleted += await mi.delete_rows(pairs)
        except CkptError as err:
            tally.error = str(err)
            return (
                f"{err}; {len(pairs)} miStudio rows of deleted files are left: the next "
                "deleting run with --mistudio removes them"
            )
        await self._drop_journal(key)
        return None

    async def _mistudio_stale(
        self, mi: MiStudio, mi_plan: MiStudioPlan, tally: _MiTally
    ) -> str | None:
        """--stale-records: the rows whose file is still gone, in one transaction."""
        from ckpt_tui.mistudio import gone_paths

        gone = await asyncio.to_thread(gone_paths, [r.path for r in mi_plan.stale])
        pairs = [(r.id, r.storage_path) for r in mi_plan.stale if r.path in gone]
        try:
            tally.stale_deleted = await mi.delete_rows(pairs)
        except CkptError as err:
            tally.error = str(err)
            return f"{err}; the stale miStudio rows were not deleted"
        return None

    async def _journals(self, mi: MiStudio | None = None) -> list[tuple[str, dict[str, object]]]:
        """The miStudio intents interrupted runs left in the index (of ``mi``'s database)."""
        async with self.db.sessions() as session:
            q = select(Meta.key, Meta.value).where(Meta.key.like(MISTUDIO_PENDING + "%"))
            found = (await session.execute(q)).all()
        out: list[tuple[str, dict[str, object]]] = []
        for key, value in found:
            try:
                doc = json.loads(value)
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                log.warning("ignoring a malformed miStudio intent %s in the index", key)
                continue
            if mi is None or doc.get("database") == mi.display:
                out.append((str(key), doc))
        return out

    async def _mistudio_repair(self, mi: MiStudio) -> int:
        """Finish what an interrupted run meant to do in miStudio: for each step it
        recorded, delete the rows if every one of its files is gone now (the claimed
        unlinks were finished by ``_recover_locked`` just before); keep them otherwise."""
        from ckpt_tui.mistudio import gone_paths

        done = 0
        for key, doc in await self._journals(mi):
            pairs: list[tuple[str, str]] = []
            steps = doc.get("steps")
            for step in steps if isinstance(steps, list) else []:
                if not isinstance(step, dict):
                    continue
                files = [str(p) for p in step.get("f", []) if isinstance(p, str)]
                rows = [
                    (str(r[0]), str(r[1]))
                    for r in step.get("r", [])
                    if isinstance(r, list) and len(r) == 2
                ]
                if files and len(await asyncio.to_thread(gone_paths, files)) == len(set(files)):
                    pairs += rows
            done += await mi.delete_rows(pairs)
            await self._drop_journal(key)
        if done:
            log.info("deleted %d miStudio rows an interrupted deletion left", done)
        return done

    async def _drop_journal(self, key: str) -> None:
        async with self.db.sessions() as session, session.begin():
            await session.execute(delete(Meta).where(Meta.key == key))

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

    async def _start_record(self, plan: Plan, ctx: history.RunContext | None) -> int:
        """The run's history row, committed before anything else; a locked or failing
        index refuses the whole run (nothing was deleted yet)."""
        try:
            return await history.start(self.db, plan, ctx or history.RunContext())
        except (DBAPIError, SQLAlchemyError) as exc:
            if is_locked_error(exc):
                raise IndexBusy(f"index {self.db.display} is locked; nothing was deleted") from None
            raise IndexError_(
                f"cannot record the deletion in index {self.db.display}: "
                f"{describe_error(exc)}; nothing was deleted"
            ) from None

    async def _claim(
        self,
        file_ids: list[int],
        run_id: int | None = None,
        journal: tuple[str, str] | None = None,
    ) -> set[int]:
        """Mark active rows ``deleting`` and commit: the durable intent before any unlink
        (with the miStudio rows to delete after the files, ``journal``, in the same
        transaction)."""
        claimed: set[int] = set()
        try:
            async with self.db.sessions() as session, session.begin():
                if journal is not None:
                    session.add(Meta(key=journal[0], value=journal[1]))
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
            raise _IndexStop(self.db, exc, unrecorded=False) from None
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
        into: list[ItemResult] | None = None,
    ) -> str | None:
        """Unlink one claimed batch in a thread, then finish it in the index; ``record``
        maps each step to the history run its result is written to; ``into`` receives the
        batch's results once the index holds them."""
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
                elif who := holder(busy, dev, f.inode, path):
                    batch_results.append(
                        ItemResult(
                            f.file_id, s.step_id, path, Outcome.FAILED, error=f"open in {who}"
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
        if into is not None:
            into += batch_results
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
        try:
            await self._finish_rows(
                root, batch, gone, errors, untouched, removed_steps, history_rows
            )
        except (DBAPIError, SQLAlchemyError) as exc:
            raise _IndexStop(self.db, exc, unrecorded=True) from None

    async def _finish_rows(
        self,
        root: fs.RootHandle,
        batch: list[PlannedStep],
        gone: list[int],
        errors: dict[int, str | None],
        untouched: set[int],
        removed_steps: set[int] | None,
        history_rows: list[dict[str, object]] | None,
    ) -> None:
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
                    await check_integrity(self.db)
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


def _rows_by_step(mi_plan: MiStudioPlan | None) -> dict[int, list[MiStudioRow]]:
    out: dict[int, list[MiStudioRow]] = {}
    for r in mi_plan.rows if mi_plan is not None else ():
        if r.step_id is not None:
            out.setdefault(r.step_id, []).append(r)
    return out


def _journal(
    mi: MiStudio | None,
    run_id: int,
    n: int,
    root: str,
    batch: list[PlannedStep],
    by_step: dict[int, list[MiStudioRow]],
) -> tuple[str, str] | None:
    """(key, value) of the index ``meta`` row recording which miStudio rows go once which
    files are gone, for the batch's steps that have rows; None when none has."""
    if mi is None:
        return None
    steps = [
        {
            "s": s.path,
            "f": [_abs(root, f) for f in s.files],
            "r": [[r.id, r.storage_path] for r in by_step[s.step_id]],
        }
        for s in batch
        if by_step.get(s.step_id) and s.files
    ]
    if not steps:
        return None
    doc = {"database": mi.display, "at": time.time(), "run": run_id, "steps": steps}
    return f"{MISTUDIO_PENDING}{run_id}:{n}", json.dumps(doc)


def _outcome(mi: MiStudio | None, tally: _MiTally) -> MiStudioOutcome | None:
    if mi is None:
        return None
    return MiStudioOutcome(
        mi.display,
        rows_deleted=tally.rows_deleted,
        rows_kept=tally.rows_kept,
        stale_deleted=tally.stale_deleted,
        repaired=tally.repaired,
        error=tally.error,
    )


def _known_files(plan: Plan) -> dict[int, set[str]]:
    """Per step whose every indexed file is planned or listed as foreign: those paths. What
    else is left in such a step folder after the run appeared since the scan."""
    foreign: dict[int, set[str]] = {}
    for f in plan.foreign:
        foreign.setdefault(f.step_id, set()).add(f.path)
    out: dict[int, set[str]] = {}
    for s in plan.steps:
        paths = {_abs(plan.root, f) for f in s.files} | foreign.get(s.step_id, set())
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
    """Best effort (recording a failure must not hide the failure itself): one line, the
    traceback only with debug logging."""
    try:
        await coro
    except Exception as exc:
        log.warning("could not record the failed run in the history: %s", _why(exc))
        log.debug("recording the failed run", exc_info=True)


def _why(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError | SQLAlchemyError):
        return describe_error(exc)
    return str(exc) or type(exc).__name__


def _deleted(run: _Run) -> int:
    return sum(r.outcome is Outcome.DELETED for r in run.results)


class _IndexStop(IndexError_):
    """The index refused a write during a run (locked by another program, or failing).
    Escaping as it is (before any unlink, or from a recovery) it is one line; ``mid_run``
    words it for a run that had deleted files already."""

    def __init__(self, db: Database, exc: DBAPIError | SQLAlchemyError, *, unrecorded: bool):
        self.busy = is_locked_error(exc)
        if self.busy:
            self.head = f"index {db.display} is locked by another program"
        else:
            self.head = f"cannot record the deletion in index {db.display}: {describe_error(exc)}"
        self.unrecorded = unrecorded  # files of the batch were unlinked, their rows not dropped
        super().__init__(
            f"{self.head}; "
            + (
                "the files just deleted are recorded by the next deleting command"
                if unrecorded
                else "nothing was deleted"
            )
        )

    def mid_run(self, deleted: int) -> str:
        done = f"{deleted} file{'s' if deleted != 1 else ''} deleted before it"
        if self.unrecorded:
            done += " (the last of them are recorded by the next deleting command)"
        return f"{self.head}; {done}, nothing after them was touched; run again to resume"


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

"""CheckpointService: the async API both faces (CLI and TUI) use. Returns frozen dataclasses.

Reading and listing live here; planning is in ``planning``, carrying plans out in ``deletion``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ckpt_tui import fs, layout, stepfacts
from ckpt_tui import history as _history
from ckpt_tui.db import (
    ROLE_FOREIGN,
    Database,
    FileRow,
    Meta,
    Pin,
    Root,
    Step,
    Training,
    open_database,
)
from ckpt_tui.errors import CkptError, RootError
from ckpt_tui.protection import Protection
from ckpt_tui.types import (
    MISTUDIO_PENDING,
    DeleteProgress,
    DiskUsage,
    ExecuteResult,
    FileBrief,
    FileDetails,
    FileInfo,
    FileStatus,
    Interrupted,
    MiStudioPending,
    MiStudioSummary,
    Plan,
    RootInfo,
    RowState,
    ScanProgress,
    ScanResult,
    StepInfo,
    StepTree,
    TensorInfo,
    TrainingInfo,
    TrainingTree,
)

if TYPE_CHECKING:
    from ckpt_tui.deletion import Deleter
    from ckpt_tui.mistudio import MiStudio, Snapshot
    from ckpt_tui.planning import Planner
    from ckpt_tui.retention import Rules

log = logging.getLogger(__name__)

STEPS_CHUNK = 500  # trainings per steps query
BAD_STATUSES = (FileStatus.TRUNCATED, FileStatus.CORRUPT, FileStatus.UNSUPPORTED)


class CheckpointService:
    """Index, browse, plan and delete checkpoints under one or more roots."""

    # The miStudio URL ``open`` uses when it is given none: the CLI sets it for the browser
    # (``ckpt-tui --mistudio URL ROOT``), whose app opens its own service.
    default_mistudio: ClassVar[str | None] = None

    def __init__(
        self,
        db: Database,
        protection: Protection | None = None,
        mistudio: MiStudio | None = None,
    ) -> None:
        self.db = db
        self.protection = protection or Protection()
        self.mistudio = mistudio  # miStudio's database (--mistudio), or None
        # the last miStudio failure a listing call absorbed (listing degrades, never raises)
        self.mistudio_problem: str | None = None
        self._planner: Planner | None = None
        self._deleter: Deleter | None = None

    # The planner and the deleter are imported on first use: listing never needs them, and
    # every command pays its imports (tests/test_cli_imports.py).
    @property
    def planner(self) -> Planner:
        if self._planner is None:
            from ckpt_tui.planning import Planner

            self._planner = Planner(self.db, self.protection, self.mistudio)
        return self._planner

    @property
    def deleter(self) -> Deleter:
        if self._deleter is None:
            from ckpt_tui.deletion import Deleter

            self._deleter = Deleter(self.db, self.mistudio)
        return self._deleter

    @classmethod
    async def open(
        cls,
        db: str | None = None,
        *,
        recover: bool = False,
        protection: Protection | None = None,
        mistudio: str | None = None,
    ) -> CheckpointService:
        """Open the index. Nothing is deleted on open: an interrupted deletion is reported by
        ``interrupted()`` and finished by the next ``execute`` (or ``finish_interrupted``);
        ``recover=True`` finishes it now (a deleting command that wants it first).

        ``mistudio``: miStudio's database URL (else ``default_mistudio``; "" for none). It is
        checked now (reachable, miStudio's schema): a MiStudioError names the problem."""
        url = mistudio if mistudio is not None else cls.default_mistudio
        handle: MiStudio | None = None
        if url:
            from ckpt_tui.mistudio import MiStudio

            handle = MiStudio(url)
            try:
                await handle.check()
            except BaseException:
                await handle.close()
                raise
        try:
            database = await open_database(db)
        except BaseException:
            if handle is not None:
                await handle.close()
            raise
        service = cls(database, protection, handle)
        if recover:
            try:
                await service.deleter.recover()
            except BaseException:
                await service.close()
                raise
        return service

    async def close(self) -> None:
        if self.mistudio is not None:
            await self.mistudio.close()
        await self.db.dispose()

    async def __aenter__(self) -> CheckpointService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # roots and scanning -------------------------------------------------------------------

    async def add_root(self, path: str) -> RootInfo:
        """Validate ``path`` and register it as a root (idempotent)."""
        handle = fs.check_root(path)
        async with self.db.sessions() as session, session.begin():
            row = (await session.execute(select(Root).where(Root.path == handle.path))).scalar()
            if row is None:
                row = Root(path=handle.path, dev=handle.dev, ino=handle.ino)
                session.add(row)
                await session.flush()
            elif (row.dev, row.ino) != (handle.dev, handle.ino):
                log.warning("root %s was replaced since it was indexed", handle.path)
                row.dev, row.ino = handle.dev, handle.ino
            return RootInfo(row.id, row.path, row.scanned_at)

    async def indexed_root(self, path: str) -> RootInfo:
        """The root's index entry, scanning it first if it was never scanned."""
        info = await self.get_root(path)
        if info is None or info.scanned_at is None:
            await self.scan(path)
            info = await self.get_root(path)
        assert info is not None
        return info

    async def get_root(self, path: str) -> RootInfo | None:
        handle = fs.check_root(path)
        async with self.db.sessions() as session:
            row = (await session.execute(select(Root).where(Root.path == handle.path))).scalar()
            return RootInfo(row.id, row.path, row.scanned_at) if row else None

    async def root_by_id(self, root_id: int) -> RootInfo:
        async with self.db.sessions() as session:
            row = await session.get(Root, root_id)
            if row is None:
                raise RootError(f"root #{root_id} is not in the index")
            return RootInfo(row.id, row.path, row.scanned_at)

    async def scan(
        self,
        root: str,
        on_progress: Callable[[ScanProgress], None] | None = None,
        *,
        training_id: int | None = None,
        cancel: threading.Event | None = None,
    ) -> ScanResult:
        """Scan ``root`` (or one training below it) into the index, incrementally."""
        info = await self.add_root(root)
        handle = fs.check_root(info.path)
        training_rel = None
        if training_id is not None:
            async with self.db.sessions() as session:
                t = await session.get(Training, training_id)
                if t is None or t.root_id != info.id:
                    raise RootError(f"training #{training_id} is not under {info.path}")
                training_rel = t.relpath
        from ckpt_tui.scanner import Scanner

        scanner = Scanner(self.db, handle, info.id)
        return await scanner.run(on_progress, training_rel, cancel)

    def disk_usage(self, root: str) -> DiskUsage:
        return fs.disk_usage(root)

    # listing ------------------------------------------------------------------------------

    async def trainings(
        self, root_id: int, names: Iterable[str] | None = None
    ) -> list[TrainingInfo]:
        """Trainings under a root, sorted by name, with totals over their steps."""
        in_root = Training.root_id == root_id
        q = (
            select(
                Training.id,
                Training.name,
                Training.relpath,
                func.count(Step.id),
                func.min(Step.step),
                func.max(Step.step),
            )
            .join(Step, Step.training_id == Training.id, isouter=True)
            .where(in_root)
            .group_by(Training.id)
        )
        sizes = (
            select(
                Step.training_id,
                func.count(FileRow.id),
                func.coalesce(func.sum(FileRow.size_bytes), 0),
                func.coalesce(func.sum(FileRow.disk_bytes), 0),
                func.max(FileRow.mtime_ns),
                func.count(func.distinct(FileRow.layer)),
            )
            .join(FileRow, FileRow.step_id == Step.id)
            .join(Training, Training.id == Step.training_id)
            .where(in_root)
            .group_by(Step.training_id)
        )
        wanted = set(names) if names is not None else None
        async with self.db.sessions() as session:
            root = await session.get(Root, root_id)
            root_path = root.path if root else ""
            size_rows = {r[0]: r[1:] for r in (await session.execute(sizes)).all()}
            out = []
            for tid, name, rel, nsteps, lo, hi in (await session.execute(q)).all():
                if wanted is not None and name not in wanted and rel not in wanted:
                    continue
                nfiles, size, disk, newest, layers = size_rows.get(tid, (0, 0, 0, None, 0))
                out.append(
                    TrainingInfo(
                        id=tid,
                        root_id=root_id,
                        name=name,
                        path=_join(root_path, _training_folder(rel)),
                        steps_path=_join(root_path, rel),
                        step_count=nsteps,
                        file_count=nfiles,
                        size_bytes=int(size),
                        disk_bytes=int(disk),
                        min_step=lo,
                        max_step=hi,
                        newest_mtime_ns=newest,
                        layer_count=layers or 0,
                    )
                )
        ordered = sorted(_unique_names(out, root_path), key=lambda t: (t.name, t.path))
        return await self._with_mistudio_trainings(root_id, ordered)

    async def steps(self, training_id: int) -> list[StepInfo]:
        """Steps of one training, ascending by step number, with completeness flags."""
        return (await self.steps_of([training_id])).get(training_id, [])

    async def steps_of(self, training_ids: Iterable[int]) -> dict[int, list[StepInfo]]:
        """Steps of several trainings in one query (marking a whole root loads them all)."""
        ids = sorted(set(training_ids))
        out: dict[int, list[StepInfo]] = {}
        async with self.db.sessions() as session:
            for i in range(0, len(ids), STEPS_CHUNK):
                out.update(await self._steps(session, ids[i : i + STEPS_CHUNK]))
        return await self._with_mistudio_steps(out)

    async def _steps(
        self, session: AsyncSession, training_ids: list[int]
    ) -> dict[int, list[StepInfo]]:
        facts = await stepfacts.step_facts(session, training_ids)
        pins = await stepfacts.load_pins(session)
        out: dict[int, list[StepInfo]] = {}
        for tid, steps in facts.items():
            verdicts = stepfacts.assess(
                steps,
                pins,
                recent_seconds=self.protection.recent_seconds,
                newest_protection=self.protection.newest_step,
            )
            out[tid] = [_step_info(s, verdicts[s.id], s.path in pins) for s in steps]
        return out

    async def files(self, step_id: int) -> list[FileInfo]:
        """Files of one step, layer order first, then path."""
        async with self.db.sessions() as session:
            step = await session.get(Step, step_id)
            if step is None:
                return []
            root_path = await self._root_path_of_step(session, step)
            q = select(FileRow).where(FileRow.step_id == step_id)
            rows = (await session.execute(q)).scalars().all()
            return sorted(
                (_file_info(r, _join(root_path, step.relpath)) for r in rows),
                key=lambda f: (f.layer is None, f.layer or 0, f.relpath),
            )

    async def file_details(self, file_id: int) -> FileDetails | None:
        async with self.db.sessions() as session:
            row = await session.get(FileRow, file_id)
            if row is None:
                return None
            step = await session.get(Step, row.step_id)
            assert step is not None
            root_path = await self._root_path_of_step(session, step)
            header: dict[str, Any] = row.header or {}
            tensors = tuple(
                TensorInfo(str(n), str(d), tuple(int(x) for x in s))
                for n, d, s in header.get("tensors", [])
            )
            return FileDetails(
                file=_file_info(row, _join(root_path, step.relpath)),
                inode=row.inode,
                nlink=row.nlink,
                tensors=tensors,
                parameter_count=int(header.get("parameter_count", 0)),
                metadata=dict(row.meta or {}),
                header_error=row.error if row.status in BAD_STATUSES else None,
            )

    async def resolve_trainings(self, root_id: int, names: Iterable[str]) -> set[int]:
        """Training ids for ``--training`` values (path, or a name that is not ambiguous)."""
        return await self.planner.resolve_trainings(root_id, names)

    async def tree(
        self, root_id: int, *, training_ids: set[int] | None = None
    ) -> list[TrainingTree]:
        """Everything under a root, nested, for ``ls`` and exports."""
        out = []
        chosen = [
            t for t in await self.trainings(root_id) if training_ids is None or t.id in training_ids
        ]
        all_steps = await self.steps_of(t.id for t in chosen)
        for t in chosen:
            steps = all_steps.get(t.id, [])
            files_by_step: dict[int, list[FileInfo]] = {s.id: [] for s in steps}
            step_paths = {s.id: s.path for s in steps}
            async with self.db.sessions() as session:
                q = select(FileRow).join(Step).where(Step.training_id == t.id)
                for r in (await session.execute(q)).scalars():
                    files_by_step.setdefault(r.step_id, []).append(
                        _file_info(r, step_paths.get(r.step_id, ""))
                    )
            out.append(
                TrainingTree(
                    t,
                    tuple(
                        StepTree(
                            s,
                            tuple(
                                sorted(
                                    files_by_step[s.id],
                                    key=lambda f: (f.layer is None, f.layer or 0, f.relpath),
                                )
                            ),
                        )
                        for s in steps
                    ),
                )
            )
        return out

    # miStudio (--mistudio) ----------------------------------------------------------------

    async def _snapshot(
        self, root_id: int, training_ids: Iterable[int] | None = None, *, stale_only: bool = False
    ) -> Snapshot | None:
        """miStudio's rows matched to a root's index; None without a miStudio database."""
        if self.mistudio is None:
            return None
        from ckpt_tui.mistudio import snapshot

        root = await self.root_by_id(root_id)
        return await snapshot(
            self.db, self.mistudio, root_id, root.path, training_ids, stale_only=stale_only
        )

    async def _listing_snapshot(
        self, root_id: int, training_ids: Iterable[int] | None
    ) -> Snapshot | None:
        """A listing call never fails on miStudio (a face keeps working): the failure is
        kept in ``mistudio_problem`` for the CLI to report, and the listing goes without."""
        try:
            return await self._snapshot(root_id, training_ids)
        except CkptError as err:
            self.mistudio_problem = str(err)
            log.warning("%s", err)
            return None

    async def _with_mistudio_trainings(
        self, root_id: int, trainings: list[TrainingInfo]
    ) -> list[TrainingInfo]:
        if self.mistudio is None or not trainings:
            return trainings
        snap = await self._listing_snapshot(root_id, {t.id for t in trainings})
        if snap is None:
            return trainings
        return [replace(t, mistudio=snap.trainings.get(t.id)) for t in trainings]

    async def _with_mistudio_steps(
        self, steps: dict[int, list[StepInfo]]
    ) -> dict[int, list[StepInfo]]:
        """Each step's rows, best flag and means; miStudio's protections among its own."""
        if self.mistudio is None or not steps:
            return steps
        by_root: dict[int, set[int]] = {}
        ids = sorted(steps)
        async with self.db.sessions() as session:
            for i in range(0, len(ids), STEPS_CHUNK):
                q = select(Training.id, Training.root_id).where(
                    Training.id.in_(ids[i : i + STEPS_CHUNK])
                )
                for tid, root_id in (await session.execute(q)).all():
                    by_root.setdefault(root_id, set()).add(tid)
        for root_id, tids in by_root.items():
            snap = await self._listing_snapshot(root_id, tids)
            if snap is None:
                continue
            for tid in tids:
                steps[tid] = [_with_mistudio(s, snap) for s in steps[tid]]
        return steps

    async def mistudio_summary(self, root_id: int) -> MiStudioSummary | None:
        """The miStudio picture of a root for ``ls``/``scan``: matched trainings, orphan
        folders, stale rows (trainings left with rows only included); raises MiStudioError."""
        snap = await self._snapshot(root_id, None, stale_only=True)
        if snap is None:
            return None
        return MiStudioSummary(
            database=snap.database,
            matched=len(snap.trainings),
            orphans=sum(1 for s in snap.steps.values() if not s.rows),
            stale_rows=len(snap.stale),
            stale_only=tuple(snap.stale_only),
            ambiguous=tuple((k, tuple(v)) for k, v in sorted(snap.ambiguous.items())),
            unrecognised=snap.unrecognised,
            pending=await self.mistudio_pending(),
        )

    async def mistudio_pending(self) -> MiStudioPending | None:
        """miStudio rows an interrupted deletion left behind (their files are gone or were
        about to go); the next deleting run with that miStudio database deletes them.
        Reads the index only: no miStudio connection, works without --mistudio. A damaged
        intent (no JSON object naming its database) is no pending deletion: no run can
        carry it out, so it is not reported as one (a deleting run logs it)."""
        async with self.db.sessions() as session:
            q = select(Meta.value).where(Meta.key.like(MISTUDIO_PENDING + "%"))
            values = list((await session.execute(q)).scalars())
        rows = steps = 0
        since: float | None = None
        database: str | None = None
        for value in values:
            try:
                doc = json.loads(value)
            except ValueError:
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("database"), str):
                continue
            database = doc["database"]
            at = doc.get("at")
            if isinstance(at, int | float) and (since is None or at < since):
                since = float(at)
            for step in doc.get("steps", []) if isinstance(doc.get("steps"), list) else []:
                if isinstance(step, dict) and isinstance(step.get("r"), list):
                    steps += 1
                    rows += len(step["r"])
        if database is None:
            return None
        return MiStudioPending(database, rows, steps, since)

    async def check_mistudio(self, *, write: bool) -> None:
        """Before a deletion: miStudio reachable, its schema, and (``write``) DELETE rights."""
        if self.mistudio is not None:
            await self.mistudio.check(write=write)

    async def file_map(self, root_id: int) -> list[FileBrief]:
        """(file, step, training, size, pinned) for every file under a root: marking without
        loading steps."""
        q = (
            select(
                FileRow.id,
                FileRow.step_id,
                Step.training_id,
                FileRow.size_bytes,
                Step.relpath,
                FileRow.disk_bytes,
            )
            .join(Step, Step.id == FileRow.step_id)
            .join(Training, Training.id == Step.training_id)
            .where(Training.root_id == root_id)
        )
        async with self.db.sessions() as session:
            root = await session.get(Root, root_id)
            prefix = (root.path.rstrip("/") + "/") if root is not None else ""
            pins = {
                p[len(prefix) :] for p in await stepfacts.load_pins(session) if p.startswith(prefix)
            }
            return [
                FileBrief(fid, sid, tid, size, rel in pins, disk)
                for fid, sid, tid, size, rel, disk in (await session.execute(q)).all()
            ]

    async def set_pinned(self, step_ids: Iterable[int], pinned: bool) -> None:
        """Pin or unpin steps. A pin belongs to the step folder (its absolute path), so it
        holds under every root that contains the folder and survives re-scans and renames
        away and back."""
        ids = sorted(set(step_ids))
        async with self.db.sessions() as session, session.begin():
            q = (
                select(Root.path, Step.relpath)
                .join(Training, Training.root_id == Root.id)
                .join(Step, Step.training_id == Training.id)
                .where(Step.id.in_(ids))
            )
            paths = {_join(root, rel) for root, rel in (await session.execute(q)).all()}
            await self._set_pins(session, paths, pinned)

    async def set_pinned_paths(
        self, root_id: int, targets: Iterable[str], pinned: bool
    ) -> list[str]:
        """Pin or unpin step folders named by path (the CLI's ``pin``/``unpin``); each must be
        an indexed step of the root. Returns the step paths."""
        root = await self.root_by_id(root_id)
        steps = await self.planner.resolve_steps(root_id, targets)
        async with self.db.sessions() as session, session.begin():
            paths = {_join(root.path, rel) for rel in steps}
            await self._set_pins(session, paths, pinned)
        return sorted(paths)

    async def _set_pins(self, session: AsyncSession, paths: set[str], pinned: bool) -> None:
        if not paths:
            return
        existing = await stepfacts.load_pins(session)
        if pinned:
            now = time.time()
            for path in sorted(paths - existing):
                session.add(Pin(path=path, pinned_at=now))
        else:
            await session.execute(delete(Pin).where(Pin.path.in_(sorted(paths))))
        # the steps' own column mirrors the pins (every root that holds the folder)
        for root_id, root_path in (await session.execute(select(Root.id, Root.path))).all():
            prefix = root_path.rstrip("/") + "/"
            rels = [p[len(prefix) :] for p in paths if p.startswith(prefix)]
            if not rels:
                continue
            in_root = select(Training.id).where(Training.root_id == root_id)
            await session.execute(
                update(Step)
                .where(Step.relpath.in_(rels), Step.training_id.in_(in_root.scalar_subquery()))
                .values(pinned=pinned)
            )

    # planning and deletion ----------------------------------------------------------------

    async def plan_files(
        self,
        root_id: int,
        file_ids: Iterable[int],
        *,
        force: bool = False,
        include_open: bool = False,
        include_foreign: bool = False,
    ) -> Plan:
        return await self.planner.plan_files(
            root_id,
            file_ids,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
        )

    async def plan_steps(
        self,
        root_id: int,
        step_ids: Iterable[int],
        *,
        force: bool = False,
        include_open: bool = False,
        include_foreign: bool = False,
    ) -> Plan:
        return await self.planner.plan_steps(
            root_id,
            step_ids,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
        )

    async def plan_retention(
        self,
        root_id: int,
        keep: int,
        trainings: Iterable[str] | None = None,
        *,
        force: bool = False,
        include_open: bool = False,
        include_foreign: bool = False,
        rules: Rules | None = None,
        stale_records: bool = False,
    ) -> Plan:
        """``stale_records``: with --mistudio, also delete miStudio rows whose file is gone."""
        return await self.planner.plan_retention(
            root_id,
            keep,
            trainings,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
            rules=rules,
            stale_records=stale_records,
        )

    async def plan_targets(
        self,
        root_id: int,
        targets: Iterable[str],
        *,
        force: bool = False,
        include_open: bool = False,
        include_foreign: bool = False,
        stale_records: bool = False,
    ) -> Plan:
        return await self.planner.plan_targets(
            root_id,
            targets,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
            stale_records=stale_records,
        )

    async def execute(
        self,
        plan: Plan,
        on_progress: Callable[[DeleteProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        allow_open: bool = False,
        ctx: _history.RunContext | None = None,
    ) -> ExecuteResult:
        """Carry out a plan (see ``deletion.Deleter.execute``); ``ctx`` says who asked, for
        the deletion history. An empty plan still finishes an interrupted deletion."""
        return await self.deleter.execute(plan, on_progress, cancel, allow_open=allow_open, ctx=ctx)

    async def history(
        self, root: str, *, since: float | None = None, step: str | None = None
    ) -> list[_history.RunRecord]:
        """Deletion runs under ``root`` (a path; it may be gone from disk), newest first."""
        return await _history.read(self.db, _normal(root), since=since, step=step)

    async def forget_history(self, root: str, before: float, *, dry_run: bool) -> int:
        return await _history.forget(self.db, _normal(root), before, dry_run=dry_run)

    async def last_deletion(self, training: TrainingInfo) -> _history.LastDeletion | None:
        """The latest run that deleted steps of a training (for the details panel)."""
        root = await self.root_by_id(training.root_id)
        rel = training.steps_path[len(root.path) :].strip("/") if training.steps_path else ""
        return await _history.last_deletion(self.db, root.path, rel)

    async def interrupted(self) -> Interrupted | None:
        """An interrupted deletion's claimed rows, if any (reads only)."""
        return await _history.pending(self.db)

    async def finish_interrupted(self) -> int:
        """Finish an interrupted deletion now (a deleting command with nothing else to do);
        the number of files it covered. IndexBusy while another deleter holds the lock."""
        return await self.deleter.recover(strict=True)

    async def delete_checkpoint(
        self, session: AsyncSession, checkpoint_id: int | str, delete_file: bool = True
    ) -> bool:
        """The original service's contract, kept: delete one file and collapse its directories.

        Returns False when the row does not exist or the file could not be deleted (its row is
        then kept with the error). ``delete_file=False`` only forgets the row.
        """
        try:
            fid = int(checkpoint_id)
        except (TypeError, ValueError):
            return False
        row = await session.get(FileRow, fid)
        if row is None or row.state != RowState.ACTIVE:
            return False
        if not delete_file:
            await session.delete(row)
            await session.commit()
            return True
        root_id = await session.scalar(
            select(Training.root_id).join(Step).where(Step.id == row.step_id)
        )
        await session.commit()  # never hold a transaction across filesystem work
        assert root_id is not None
        plan = await self.planner.plan_files(root_id, [fid], force=True)
        if plan.empty:
            return False
        result = await self.execute(plan)
        return bool(result.deleted) and not result.failed

    async def _root_path_of_step(self, session: AsyncSession, step: Step) -> str:
        path = await session.scalar(
            select(Root.path).join(Training).where(Training.id == step.training_id)
        )
        return path or ""


def _step_info(s: stepfacts.StepFact, a: stepfacts.Assessment, pinned: bool) -> StepInfo:
    return StepInfo(
        id=s.id,
        training_id=s.training_id,
        step=s.step,
        dirname=s.dirname,
        path=s.path,
        file_count=s.files,
        layer_count=s.layers,
        size_bytes=s.size,
        disk_bytes=s.disk,
        mtime_ns=s.mtime_ns,
        pinned=pinned,
        incomplete=not a.valid,
        problems=a.problems,
        unit=s.unit,
        config=s.config,
        valid=a.valid,
        protection=a.protection,
        foreign_count=s.foreign,
        foreign_bytes=s.foreign_bytes,
    )


def _with_mistudio(s: StepInfo, snap: Snapshot) -> StepInfo:
    info = snap.steps.get(s.id)
    if info is None:
        return s
    extra = tuple(r for r in snap.protection(s.id) if r not in s.protection)
    return replace(s, mistudio=info, protection=(*s.protection, *extra))


def _unique_names(trainings: list[TrainingInfo], root: str) -> list[TrainingInfo]:
    """Two families of steps in one training folder share its name: each is then shown by
    the path of the folder holding its steps (``exp`` and ``exp/checkpoints``)."""
    counts: dict[str, int] = {}
    for t in trainings:
        counts[t.name] = counts.get(t.name, 0) + 1
    out = []
    for t in trainings:
        if counts[t.name] > 1:
            where = t.steps_path
            rel = where[len(root) :].strip("/") if where.startswith(root) else where
            t = replace(t, name=rel or t.name)
        out.append(t)
    return out


def _normal(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _training_folder(steps_parent: str) -> str:
    parts = tuple(p for p in steps_parent.split("/") if p)
    return layout.join_parts(layout.training_dir_for(parts))


def _join(root: str, rel: str) -> str:
    return f"{root}/{rel}" if rel else root


def _file_info(r: FileRow, step_path: str) -> FileInfo:
    return FileInfo(
        id=r.id,
        step_id=r.step_id,
        relpath=r.relpath,
        path=f"{step_path}/{r.relpath}",
        layer=r.layer,
        hook=r.hook,
        size_bytes=r.size_bytes,
        disk_bytes=r.disk_bytes,
        mtime_ns=r.mtime_ns,
        status=FileStatus(r.status),
        state=RowState(r.state),
        error=r.error,
        foreign=r.role == ROLE_FOREIGN,
    )

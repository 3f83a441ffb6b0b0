"""Turn a selection (file ids, steps, retention rules, CLI targets) into an immutable Plan.

Every planned file is re-validated against the layout grammar, and live-writer protection is
applied here so both faces show the same reasons.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, func, select, type_coerce

from ckpt_tui import layout, retention
from ckpt_tui.db import Database, FileRow, Root, Step, Training
from ckpt_tui.errors import TargetError
from ckpt_tui.procfs import open_files
from ckpt_tui.types import FileStatus, KeptStep, Plan, PlannedFile, PlannedStep, Protected, RowState

log = logging.getLogger(__name__)

RECENT_SECONDS = 120.0
ALREADY_DELETING = "already being deleted"
CHUNK = 500
BULK_IDS = 5_000  # beyond this many ids, select the root's rows once and filter in Python


@dataclass(frozen=True, slots=True)
class Protection:
    """Live-writer protection, on by default; ``force`` on a plan lifts the first two."""

    newest_step: bool = True
    recent_seconds: float = RECENT_SECONDS
    open_files: bool = True


@dataclass(slots=True)
class _Row:
    fid: int
    relpath: str
    size: int
    disk: int
    inode: int
    dev: int
    mtime_ns: int
    nlink: int
    status: str
    state: str
    sid: int
    step: int
    step_rel: str
    pinned: bool
    tid: int
    training: str

    def malformed(self) -> str | None:
        """Why this row cannot be trusted (a column without its model's type), or None."""
        for name in ("fid", "size", "disk", "inode", "dev", "mtime_ns", "nlink", "sid", "step"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                return f"{name} is {value!r}"
        for name in ("relpath", "step_rel"):
            if type(getattr(self, name)) is not str:
                return f"{name} is not text"
        if self.status not in _STATUSES:
            return f"status is {self.status!r}"
        if self.state not in _STATES:
            return f"state is {self.state!r}"
        if self.pinned not in (0, 1):  # raw column value; True/False compare equal to 1/0
            return f"pinned is {self.pinned!r}"
        return None


_STATUSES = frozenset(s.value for s in FileStatus)
_STATES = frozenset(s.value for s in RowState)


class Planner:
    def __init__(self, db: Database, protection: Protection) -> None:
        self.db = db
        self.protection = protection

    async def _root(self, root_id: int) -> str:
        async with self.db.sessions() as session:
            root = await session.get(Root, root_id)
            if root is None:
                raise TargetError(f"root #{root_id} is not in the index")
            return root.path

    async def _rows(self, where: Any) -> list[_Row]:
        q = (
            select(
                FileRow.id,
                FileRow.relpath,
                FileRow.size_bytes,
                FileRow.disk_bytes,
                FileRow.inode,
                FileRow.dev,
                FileRow.mtime_ns,
                FileRow.nlink,
                FileRow.status,
                FileRow.state,
                Step.id,
                Step.step,
                Step.relpath,
                type_coerce(Step.pinned, Integer),  # raw, so a malformed value is seen
                Training.id,
                Training.name,
            )
            .join(Step, Step.id == FileRow.step_id)
            .join(Training, Training.id == Step.training_id)
            .where(where)
        )
        async with self.db.engine.connect() as conn:  # Core rows: no ORM identity map
            return [_Row(*list(r)) for r in (await conn.execute(q)).all()]

    async def _facts(self, training_ids: set[int]) -> tuple[dict[int, int], dict[int, int]]:
        """(newest step number per training, file count per step) for the given trainings."""
        newest: dict[int, int] = {}
        counts: dict[int, int] = {}
        ids = sorted(training_ids)
        async with self.db.sessions() as session:
            for i in range(0, len(ids), CHUNK):
                chunk = ids[i : i + CHUNK]
                q = select(Step.training_id, Step.step).where(Step.training_id.in_(chunk))
                for t, step in (await session.execute(q)).all():
                    if type(step) is int and step > newest.get(t, -1):  # malformed rows skipped
                        newest[t] = step
                q2 = (
                    select(FileRow.step_id, func.count(FileRow.id))
                    .join(Step)
                    .where(Step.training_id.in_(chunk))
                    .group_by(FileRow.step_id)
                )
                counts.update({s: c for s, c in (await session.execute(q2)).all()})
        return newest, counts

    async def plan_files(
        self,
        root_id: int,
        file_ids: Iterable[int],
        *,
        force: bool = False,
        include_open: bool = False,
    ) -> Plan:
        ids = sorted(set(file_ids))
        rows: list[_Row] = []
        if len(ids) > BULK_IDS:  # one scan of the root beats hundreds of IN (...) queries
            wanted = set(ids)
            rows = [r for r in await self._rows(Training.root_id == root_id) if r.fid in wanted]
        else:
            for i in range(0, len(ids), CHUNK):
                rows += await self._rows(FileRow.id.in_(ids[i : i + CHUNK]))
        return await self._build(root_id, rows, force=force, include_open=include_open)

    async def plan_steps(
        self,
        root_id: int,
        step_ids: Iterable[int],
        *,
        force: bool = False,
        include_open: bool = False,
    ) -> Plan:
        ids = sorted(set(step_ids))
        rows: list[_Row] = []
        if len(ids) > BULK_IDS // 4:
            wanted = set(ids)
            rows = [r for r in await self._rows(Training.root_id == root_id) if r.sid in wanted]
        else:
            for i in range(0, len(ids), CHUNK):
                rows += await self._rows(Step.id.in_(ids[i : i + CHUNK]))
        return await self._build(root_id, rows, force=force, include_open=include_open)

    async def plan_retention(
        self,
        root_id: int,
        keep: int,
        trainings: Iterable[str] | None = None,
        *,
        force: bool = False,
        include_open: bool = False,
        rules: retention.Rules | None = None,
    ) -> Plan:
        """Keep the newest ``keep`` steps, pinned ones, and what ``rules`` add; plan the rest."""
        if keep < 1:
            raise TargetError("--keep must be at least 1")
        rules = rules or retention.Rules(keep=keep)
        wanted = set(trainings) if trainings is not None else None
        q = (
            select(
                Step.id,
                Step.step,
                type_coerce(Step.pinned, Integer),
                Step.relpath,
                Training.id,
                Training.name,
                Training.relpath,
                func.coalesce(func.sum(FileRow.size_bytes), 0),
                func.coalesce(func.max(FileRow.mtime_ns), 0),
            )
            .join(Training, Training.id == Step.training_id)
            .join(FileRow, FileRow.step_id == Step.id, isouter=True)
            .where(Training.root_id == root_id)
            .group_by(Step.id, Training.id)
        )
        async with self.db.sessions() as session:
            all_steps = (await session.execute(q)).all()
        root = await self._root(root_id)
        if wanted is not None:
            known = {r[5] for r in all_steps} | {r[6] for r in all_steps}
            missing = sorted(wanted - known)
            if missing:
                raise TargetError(f"no training named {missing[0]!r} under {root}")
        by_training: dict[int, list[Any]] = defaultdict(list)
        refused: list[Protected] = []
        for r in all_steps:
            if wanted is not None and r[5] not in wanted and r[6] not in wanted:
                continue
            if type(r[1]) is not int or r[2] not in (0, 1) or type(r[3]) is not str:
                refused.append(
                    Protected(
                        f"{root}/{r[3]}",
                        f"refused: malformed index row (step is {r[1]!r}, pinned is {r[2]!r})",
                        None,
                        r[0],
                    )
                )
                continue
            by_training[r[4]].append(r)
        metrics = await self._metrics(set(by_training), rules.best.key) if rules.best else {}
        delete_ids: list[int] = []
        kept: list[KeptStep] = []
        now_ns = time.time_ns()
        for steps in by_training.values():
            facts = [
                retention.StepFacts(r[0], r[1], r[2], r[8], metrics.get(r[0], {})) for r in steps
            ]
            decision = retention.decide(facts, rules, now_ns)
            delete_ids += decision.delete
            for r in steps:
                if r[0] in decision.keep:
                    kept.append(
                        KeptStep(
                            r[0],
                            r[5],
                            r[1],
                            os.path.join(root, r[3]),
                            int(r[7]),
                            decision.keep[r[0]],
                        )
                    )
        plan = await self.plan_steps(root_id, delete_ids, force=force, include_open=include_open)
        kept.sort(key=lambda k: (k.training, k.step))
        return Plan(
            plan.root_id,
            plan.root,
            plan.steps,
            tuple(kept),
            (*refused, *plan.protected),
            plan.created_at,
        )

    async def _metrics(
        self, training_ids: set[int], key: str
    ) -> dict[int, dict[str, float | None]]:
        """Per step, the mean of ``__metadata__[key]`` over its files that carry it.

        A step with no file carrying the key is absent (kept, not guessed); a value that is
        not a number makes the step's value None (also kept).
        """
        values: dict[int, list[float | None]] = defaultdict(list)
        q = (
            select(FileRow.step_id, FileRow.meta)
            .join(Step, Step.id == FileRow.step_id)
            .where(Step.training_id.in_(sorted(training_ids)), FileRow.meta.is_not(None))
        )
        async with self.db.sessions() as session:
            for sid, meta in (await session.execute(q)).all():
                if isinstance(meta, dict) and key in meta:
                    values[sid].append(_number(meta[key]))
        out: dict[int, dict[str, float | None]] = {}
        for sid, vs in values.items():
            nums = [v for v in vs if v is not None]
            out[sid] = {key: sum(nums) / len(nums) if len(nums) == len(vs) else None}
        return out

    async def plan_targets(
        self,
        root_id: int,
        targets: Iterable[str],
        *,
        force: bool = False,
        include_open: bool = False,
    ) -> Plan:
        """CLI targets: step directories or files (or layer directories) under the root."""
        root = await self._root(root_id)
        root_parts = _components(root)
        async with self.db.sessions() as session:
            q = select(Step.id, Step.relpath).join(Training).where(Training.root_id == root_id)
            steps = {rel: sid for sid, rel in (await session.execute(q)).all()}
        step_ids: list[int] = []
        file_ids: list[int] = []
        for target in targets:
            parts = _components(target)
            if len(parts) <= len(root_parts) or parts[: len(root_parts)] != root_parts:
                raise TargetError(f"{target} is not under the root {root}")
            rel = parts[len(root_parts) :]
            for n in range(len(rel), 0, -1):
                sid = steps.get("/".join(rel[:n]))
                if sid is not None:
                    break
            else:
                raise TargetError(
                    f"{target} is not an indexed step directory or file "
                    f"(run `ckpt-tui scan {root}` first?)"
                )
            if n == len(rel):
                step_ids.append(sid)
                continue
            inner = "/".join(rel[n:])
            matched = [
                r.fid
                for r in await self._rows(Step.id == sid)
                if r.relpath == inner or r.relpath.startswith(inner + "/")
            ]
            if not matched:
                raise TargetError(f"{target} is not an indexed file of step {'/'.join(rel[:n])}")
            file_ids += matched
        rows: list[_Row] = []
        for i in range(0, len(step_ids), CHUNK):
            rows += await self._rows(Step.id.in_(step_ids[i : i + CHUNK]))
        for i in range(0, len(file_ids), CHUNK):
            rows += await self._rows(FileRow.id.in_(file_ids[i : i + CHUNK]))
        return await self._build(root_id, rows, force=force, include_open=include_open)

    async def _build(
        self, root_id: int, rows: list[_Row], *, force: bool, include_open: bool
    ) -> Plan:
        root = await self._root(root_id)
        newest, counts = await self._facts({r.tid for r in rows})
        busy = await asyncio.to_thread(open_files) if self.protection.open_files and rows else {}
        # Checking 100k rows is pure CPU: off the event loop, so a face stays responsive.
        return await asyncio.to_thread(
            self._assemble, root_id, root, rows, newest, counts, busy, force, include_open
        )

    def _assemble(
        self,
        root_id: int,
        root: str,
        rows: list[_Row],
        newest: dict[int, int],
        counts: dict[int, int],
        busy: dict[tuple[int, int], str],
        force: bool,
        include_open: bool,
    ) -> Plan:
        now_ns = time.time_ns()
        recent_ns = int(self.protection.recent_seconds * 1e9)
        protected: list[Protected] = []
        chosen: dict[int, list[PlannedFile]] = defaultdict(list)
        meta: dict[int, _Row] = {}
        seen: set[int] = set()
        good: list[_Row] = []
        for r in rows:
            problem = r.malformed()
            if problem is None:
                good.append(r)
                continue
            where = f"{root}/{r.step_rel}/{r.relpath}"
            if not isinstance(r.step_rel, str) or not isinstance(r.relpath, str):
                where = f"{root} (file #{r.fid!r})"
            log.warning("refused malformed index row %s: %s", where, problem)
            protected.append(
                Protected(
                    where,
                    f"refused: malformed index row ({problem})",
                    r.fid if type(r.fid) is int else None,
                )
            )
        for r in sorted(good, key=lambda r: (r.training, r.step, r.step_rel, r.relpath)):
            if r.fid in seen:
                continue
            seen.add(r.fid)
            parts = layout.validate_file_record(r.step_rel, r.relpath)
            reason = None
            needs_confirm = False
            if parts is None:
                reason = "refused: the index row is not a valid path inside the root"
            elif r.state != RowState.ACTIVE:
                reason = ALREADY_DELETING
            elif r.status == FileStatus.SPECIAL:
                reason = "not a regular file; never deleted"
            elif r.pinned:
                reason = "pinned"
            elif not force and self.protection.newest_step and newest.get(r.tid) == r.step:
                reason = "newest step of its training (may still be written); --force to include"
            elif not force and recent_ns and now_ns - r.mtime_ns < recent_ns:
                age = max(0, (now_ns - r.mtime_ns) // 1_000_000_000)
                reason = f"modified {age} s ago (may still be written); --force to include"
            elif (r.dev, r.inode) in busy and not include_open:
                reason = f"open in {busy[(r.dev, r.inode)]}; needs a second confirmation"
                needs_confirm = True
            if reason is not None:
                path = f"{root}/{r.step_rel}/{r.relpath}"
                protected.append(Protected(path, reason, r.fid, r.sid, needs_confirm))
                continue
            assert parts is not None
            meta[r.sid] = r
            chosen[r.sid].append(
                PlannedFile(
                    file_id=r.fid,
                    relparts=parts,
                    size_bytes=r.size,
                    disk_bytes=r.disk,
                    inode=r.inode,
                    mtime_ns=r.mtime_ns,
                    nlink=r.nlink,
                    is_symlink=r.status == FileStatus.SYMLINK,
                )
            )
        steps = tuple(
            PlannedStep(
                step_id=sid,
                training=meta[sid].training,
                training_id=meta[sid].tid,
                step=meta[sid].step,
                path=os.path.join(root, meta[sid].step_rel),
                relparts=layout.validate_step_record(meta[sid].step_rel) or (),
                files=tuple(files),
                whole=len(files) == counts.get(sid, 0),
            )
            for sid, files in chosen.items()
        )
        return Plan(root_id, root, steps, (), tuple(protected), time.time())


def _number(value: object) -> float | None:
    try:
        f = float(str(value))
    except ValueError:
        return None
    return None if f != f else f


def _components(path: str) -> tuple[str, ...]:
    """Components of an absolute, normalised path; compared whole, never as string prefixes."""
    return tuple(p for p in os.path.abspath(os.path.expanduser(path)).split("/") if p)

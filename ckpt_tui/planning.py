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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, and_, select, type_coerce

from ckpt_tui import layout, retention, stepfacts
from ckpt_tui.db import ROLE_FOREIGN, Database, FileRow, Root, Step, Training
from ckpt_tui.errors import TargetError
from ckpt_tui.procfs import holder, open_files
from ckpt_tui.protection import Protection
from ckpt_tui.types import (
    FileStatus,
    ForeignFile,
    KeptStep,
    MiStudioPlan,
    MiStudioRow,
    Plan,
    PlannedFile,
    PlannedStep,
    Protected,
    RowState,
)

if TYPE_CHECKING:  # imported on use, only with a miStudio database (--mistudio)
    from ckpt_tui.mistudio import MiStudio, Snapshot

log = logging.getLogger(__name__)

ALREADY_DELETING = "already being deleted"
FORCE_HINT = "; --force to include"  # ends every reason that force lifts
CHUNK = 500
BULK_IDS = 5_000  # beyond this many ids, select the root's rows once and filter in Python


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
    role: str = "artifact"

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


@dataclass(frozen=True, slots=True)
class _StaleScope:
    """Which stale miStudio rows (file gone) a plan deletes (``--stale-records``): those of
    ``trainings``, of the planned steps' trainings (``planned``), or, when neither, every
    one under the root (trainings with no folder left included)."""

    trainings: frozenset[int] | None = None
    planned: bool = False


class Planner:
    def __init__(
        self, db: Database, protection: Protection, mistudio: MiStudio | None = None
    ) -> None:
        self.db = db
        self.protection = protection
        self.mistudio = mistudio

    async def _snapshot(
        self, root_id: int, root: str, training_ids: set[int] | None, *, stale_only: bool = False
    ) -> Snapshot | None:
        if self.mistudio is None:
            return None
        from ckpt_tui.mistudio import snapshot

        return await snapshot(
            self.db, self.mistudio, root_id, root, training_ids, stale_only=stale_only
        )

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
                FileRow.role,
            )
            .join(Step, Step.id == FileRow.step_id)
            .join(Training, Training.id == Step.training_id)
            .where(where)
        )
        async with self.db.engine.connect() as conn:  # Core rows: no ORM identity map
            return [_Row(*list(r)) for r in (await conn.execute(q)).all()]

    async def _training_facts(
        self, training_ids: set[int]
    ) -> tuple[dict[int, list[stepfacts.StepFact]], set[str]]:
        async with self.db.sessions() as session:
            facts = await stepfacts.step_facts(session, training_ids)
            pins = await stepfacts.load_pins(session)
        return facts, pins

    async def resolve_trainings(self, root_id: int, names: Iterable[str]) -> set[int]:
        """Training ids for ``--training`` values: a path relative to the root (the training
        folder or the folder holding its steps) or a bare name that matches one training.

        A name that matches several trainings is refused with the candidates listed."""
        root = await self._root(root_id)
        async with self.db.sessions() as session:
            q = select(Training.id, Training.name, Training.relpath).where(
                Training.root_id == root_id
            )
            rows = [(t, str(n), str(r)) for t, n, r in (await session.execute(q)).all()]
        out: set[int] = set()
        for raw in names:
            want = raw.strip("/")
            exact = {t for t, _n, rel in rows if rel == want}
            if not exact:
                exact = {t for t, n, _rel in rows if n == want}
            if not exact:
                exact = {t for t, n, _rel in rows if n.rsplit("/", 1)[-1] == want}
            if not exact:
                raise TargetError(f"no training named {raw!r} under {root}")
            if len(exact) > 1:
                paths = sorted(rel or "." for t, _n, rel in rows if t in exact)
                raise TargetError(
                    f"training name {raw!r} is ambiguous under {root}: "
                    f"{', '.join(paths)}; give one of these paths"
                )
            out |= exact
        return out

    async def plan_files(
        self,
        root_id: int,
        file_ids: Iterable[int],
        *,
        force: bool = False,
        include_open: bool = False,
        include_foreign: bool = False,
    ) -> Plan:
        ids = sorted(set(file_ids))
        rows: list[_Row] = []
        if len(ids) > BULK_IDS:  # one scan of the root beats hundreds of IN (...) queries
            wanted = set(ids)
            rows = [r for r in await self._rows(Training.root_id == root_id) if r.fid in wanted]
        else:
            for i in range(0, len(ids), CHUNK):  # ids of another root are never planned here
                chunk = ids[i : i + CHUNK]
                rows += await self._rows(and_(Training.root_id == root_id, FileRow.id.in_(chunk)))
        return await self._build(
            root_id,
            rows,
            (),
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
        return await self._plan_step_ids(
            root_id,
            step_ids,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
        )

    async def _plan_step_ids(
        self,
        root_id: int,
        step_ids: Iterable[int],
        *,
        force: bool,
        include_open: bool,
        include_foreign: bool,
        stale: _StaleScope | None = None,
        snap: Snapshot | None = None,
    ) -> Plan:
        ids = sorted(set(step_ids))
        rows: list[_Row] = []
        if len(ids) > BULK_IDS // 4:
            wanted = set(ids)
            rows = [r for r in await self._rows(Training.root_id == root_id) if r.sid in wanted]
        else:
            for i in range(0, len(ids), CHUNK):
                chunk = ids[i : i + CHUNK]
                rows += await self._rows(and_(Training.root_id == root_id, Step.id.in_(chunk)))
        return await self._build(
            root_id,
            rows,
            ids,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
            stale=stale,
            snap=snap,
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
        rules: retention.Rules | None = None,
        stale_records: bool = False,
    ) -> Plan:
        """Keep what the rules keep (counting valid steps only), pinned steps and steps that
        may be in progress; plan the rest, empty step folders included.

        With miStudio: steps of an active training and its best step are kept too (unless
        ``force``); ``--best loss`` ranks by miStudio's loss when no file carries the key;
        ``stale_records`` also deletes the rows whose file is gone."""
        if keep < 1:
            raise TargetError("--keep must be at least 1")
        rules = rules or retention.Rules(keep=keep)
        root = await self._root(root_id)
        wanted = await self.resolve_trainings(root_id, trainings) if trainings is not None else None
        async with self.db.sessions() as session:
            q = select(
                Step.id,
                Step.step,
                type_coerce(Step.pinned, Integer),
                Step.relpath,
                Training.id,
                Training.name,
            ).join(Training, Training.id == Step.training_id)
            all_steps = (await session.execute(q.where(Training.root_id == root_id))).all()
        names: dict[int, str] = {}
        refused: list[Protected] = []
        tids: set[int] = set()
        for sid, step, pinned, rel, tid, tname in all_steps:
            if wanted is not None and tid not in wanted:
                continue
            if type(step) is not int or pinned not in (0, 1) or type(rel) is not str:
                refused.append(
                    Protected(
                        f"{root}/{rel}",
                        f"refused: malformed index row (step is {step!r}, pinned is {pinned!r})",
                        None,
                        sid,
                    )
                )
                continue
            tids.add(tid)
            names[tid] = str(tname)
        facts, pins = await self._training_facts(tids)
        metrics = await self._metrics(tids, rules.best.key) if rules.best else {}
        whole_root = wanted is None
        # the whole root: stale rows of trainings with no folder left are shown (or deleted)
        snap = await self._snapshot(
            root_id, root, None if whole_root else tids, stale_only=whole_root
        )
        if rules.best is not None and snap is not None:
            _mistudio_metrics(metrics, facts, snap, rules.best.key)
        delete_ids: list[int] = []
        kept: list[KeptStep] = []
        now_ns = time.time_ns()
        for tid, steps in facts.items():
            verdicts = stepfacts.assess(steps, pins, newest_protection=False)
            decision = retention.decide(
                [
                    retention.StepFacts(
                        f.id,
                        f.step,
                        f.path in pins,
                        f.mtime_ns,
                        metrics.get(f.id, {}),
                        valid=verdicts[f.id].valid,
                    )
                    for f in steps
                ],
                rules,
                now_ns,
            )
            for f in steps:
                needs = () if force or snap is None else snap.protection(f.id)
                if f.id in decision.keep or needs:
                    why = decision.keep.get(f.id, ())
                    why = (*why, *(r for r in needs if r not in why))
                    kept.append(KeptStep(f.id, names[tid], f.step, f.path, f.size, why))
            kept_ids = {k.step_id for k in kept}
            delete_ids += [sid for sid in decision.delete if sid not in kept_ids]
        scope = None
        if stale_records:
            scope = _StaleScope(None if whole_root else frozenset(tids))
        plan = await self._plan_step_ids(
            root_id,
            delete_ids,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
            stale=scope,
            snap=snap,
        )
        kept.sort(key=lambda k: (k.training, k.step, k.path))
        return replace(plan, keep=tuple(kept), protected=(*refused, *plan.protected))

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

    async def resolve_steps(self, root_id: int, targets: Iterable[str]) -> list[str]:
        """Relative paths of indexed step folders named by ``targets`` (absolute or relative
        to the working directory); anything else is refused, naming it."""
        root = await self._root(root_id)
        root_parts = _components(root)
        async with self.db.sessions() as session:
            q = select(Step.relpath).join(Training).where(Training.root_id == root_id)
            known = {r for r in (await session.execute(q)).scalars() if isinstance(r, str)}
        out: list[str] = []
        for target in targets:
            parts = _components(target)
            rel = "/".join(parts[len(root_parts) :])
            if parts[: len(root_parts)] != root_parts or rel not in known:
                raise TargetError(
                    f"{target} is not an indexed step folder under {root} "
                    f"(run `ckpt-tui scan {root}` first?)"
                )
            out.append(rel)
        return out

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
        """CLI targets: step directories, files or layer directories in them, or training
        folders (every step of the training, then its emptied folders). ``stale_records``:
        also the miStudio rows whose file is gone, of the targets' trainings."""
        root = await self._root(root_id)
        root_parts = _components(root)
        async with self.db.sessions() as session:
            q = (
                select(Step.id, Step.relpath, Training.id, Training.relpath)
                .join(Training)
                .where(Training.root_id == root_id)
            )
            all_steps = (await session.execute(q)).all()
        steps = {rel: sid for sid, rel, _t, _tr in all_steps}
        step_ids: list[int] = []
        file_ids: list[int] = []
        for target in targets:
            parts = _components(target)
            if len(parts) < len(root_parts) or parts[: len(root_parts)] != root_parts:
                raise TargetError(f"{target} is not under the root {root}")
            rel = parts[len(root_parts) :]
            for n in range(len(rel), 0, -1):
                sid = steps.get("/".join(rel[:n]))
                if sid is not None:
                    break
            else:
                # a training folder (or the folder holding its steps): all of its steps
                whole = [
                    sid
                    for sid, _rel, _tid, trel in all_steps
                    if isinstance(trel, str) and rel in _training_folders(trel)
                ]
                if whole:  # the root itself names a training whose steps sit in it
                    step_ids += whole
                    continue
                raise TargetError(
                    f"{target} is not an indexed step, file or training folder "
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
        return await self._build(
            root_id,
            rows,
            step_ids,
            force=force,
            include_open=include_open,
            include_foreign=include_foreign,
            stale=_StaleScope(planned=True) if stale_records else None,
        )

    async def _build(
        self,
        root_id: int,
        rows: list[_Row],
        step_ids: Iterable[int],
        *,
        force: bool,
        include_open: bool,
        include_foreign: bool,
        stale: _StaleScope | None = None,
        snap: Snapshot | None = None,
    ) -> Plan:
        root = await self._root(root_id)
        wanted_steps = set(step_ids)
        tids = {r.tid for r in rows if type(r.tid) is int}
        if wanted_steps:
            async with self.db.sessions() as session:
                for i in range(0, len(sorted(wanted_steps)), CHUNK):
                    chunk = sorted(wanted_steps)[i : i + CHUNK]
                    q = (
                        select(Step.training_id)
                        .join(Training, Training.id == Step.training_id)
                        .where(Step.id.in_(chunk), Training.root_id == root_id)
                        .distinct()
                    )
                    tids.update(t for t in (await session.execute(q)).scalars() if type(t) is int)
        facts, pins = await self._training_facts(tids)
        trelpaths, tnames = await self._training_paths(tids)
        busy = await asyncio.to_thread(open_files) if self.protection.open_files and rows else {}
        if stale is not None and stale.planned:
            stale = _StaleScope(frozenset(tids))
        if snap is None and self.mistudio is not None:
            whole = stale is not None and stale.trainings is None
            snap = await self._snapshot(root_id, root, None if whole else tids, stale_only=whole)
        ctx = _Context(
            root_id,
            root,
            facts,
            pins,
            trelpaths,
            tnames,
            busy,
            wanted_steps,
            force,
            include_open,
            include_foreign,
            snap,
            stale,
        )
        # Checking 100k rows is pure CPU: off the event loop, so a face stays responsive.
        return await asyncio.to_thread(self._assemble, rows, ctx)

    async def _training_paths(self, tids: set[int]) -> tuple[dict[int, str], dict[int, str]]:
        """(relpath, name) of each training."""
        rels: dict[int, str] = {}
        names: dict[int, str] = {}
        ids = sorted(tids)
        async with self.db.sessions() as session:
            for i in range(0, len(ids), CHUNK):
                q = select(Training.id, Training.relpath, Training.name).where(
                    Training.id.in_(ids[i : i + CHUNK])
                )
                for t, rel, name in (await session.execute(q)).all():
                    if type(rel) is str:
                        rels[t] = rel
                    names[t] = str(name)
        return rels, names

    def _assemble(self, rows: list[_Row], ctx: _Context) -> Plan:
        root = ctx.root
        now_ns = time.time_ns()
        recent_ns = int(self.protection.recent_seconds * 1e9)
        protected: list[Protected] = []
        foreign: list[ForeignFile] = []
        chosen: dict[int, list[PlannedFile]] = defaultdict(list)
        step_of: dict[int, stepfacts.StepFact] = {}
        verdict: dict[int, stepfacts.Assessment] = {}
        for training_steps in ctx.facts.values():
            verdicts = stepfacts.assess(
                training_steps, ctx.pins, newest_protection=self.protection.newest_step
            )
            for fact in training_steps:
                step_of[fact.id] = fact
                verdict[fact.id] = verdicts[fact.id]
        step_refused: dict[int, str] = {}  # steps protected as a whole (each file is listed)

        def step_reason(sid: int) -> str | None:
            a = verdict.get(sid)
            if a is None:
                return None
            for why in a.protection:
                if why == stepfacts.PINNED:
                    return "pinned"
                if not ctx.force and why.startswith(("newest", "newer", "no valid")):
                    return f"{why}{FORCE_HINT}"
            if ctx.mistudio is not None and not ctx.force:
                needs = ctx.mistudio.protection(sid)
                if needs:
                    return f"{'; '.join(needs)}; --force to include"
            return None

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
        meta: dict[int, _Row] = {}
        for r in sorted(good, key=lambda r: (r.training, r.step, r.step_rel, r.relpath)):
            if r.fid in seen:
                continue
            seen.add(r.fid)
            parts = layout.validate_file_record(r.step_rel, r.relpath)
            path = f"{root}/{r.step_rel}/{r.relpath}"
            whole_reason = step_reason(r.sid)
            if parts is not None and whole_reason is not None:
                step_refused.setdefault(r.sid, whole_reason)
                protected.append(
                    Protected(
                        path,
                        whole_reason,
                        r.fid,
                        r.sid,
                        step_path=f"{root}/{r.step_rel}",
                        forcable=whole_reason.endswith(FORCE_HINT),
                    )
                )
                continue
            reason = None
            needs_confirm = False
            if parts is None:
                reason = "refused: the index row is not a valid path inside the root"
            elif r.state != RowState.ACTIVE:
                reason = ALREADY_DELETING
            elif r.status == FileStatus.SPECIAL:
                reason = "not a regular file; never deleted"
            elif r.role == ROLE_FOREIGN and not ctx.include_foreign:
                foreign.append(ForeignFile(path, r.size, r.sid))
                continue
            elif not ctx.force and recent_ns and now_ns - r.mtime_ns < recent_ns:
                age = max(0, (now_ns - r.mtime_ns) // 1_000_000_000)
                reason = f"modified {age} s ago (may still be written){FORCE_HINT}"
            elif not ctx.include_open and (who := holder(ctx.busy, r.dev, r.inode, path)):
                reason = f"open in {who}; needs a second confirmation"
                needs_confirm = True
            if reason is not None:
                protected.append(
                    Protected(
                        path,
                        reason,
                        r.fid,
                        r.sid,
                        needs_confirm,
                        step_path=f"{root}/{r.step_rel}",
                        forcable=reason.endswith(FORCE_HINT),
                    )
                )
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
                    dev=r.dev,
                )
            )
        # Selected steps with no files at all (a bare mkdir, debris of an older cleaner):
        # planned as rmdir-only, unless protected.
        for sid in sorted(ctx.wanted_steps - set(chosen) - set(step_refused)):
            empty = step_of.get(sid)
            if empty is None or empty.files:
                continue
            empty_why = step_reason(sid)
            if layout.validate_step_record(empty.relpath) is None:
                protected.append(Protected(empty.path, "refused: not a valid step path", None, sid))
            elif empty_why is not None:
                protected.append(
                    Protected(
                        empty.path,
                        empty_why,
                        None,
                        sid,
                        step_path=empty.path,
                        forcable=empty_why.endswith(FORCE_HINT),
                    )
                )
            else:
                chosen[sid] = []
        _settle_links(chosen)
        steps: list[PlannedStep] = []
        for sid, files in chosen.items():
            sf = step_of.get(sid)
            row = meta.get(sid)
            if sf is not None:
                tid, number, step_rel = sf.training_id, sf.step, sf.relpath
            elif row is not None:  # not assessed (malformed siblings): the row's own facts
                tid, number, step_rel = row.tid, row.step, row.step_rel
            else:
                continue
            steps.append(
                PlannedStep(
                    step_id=sid,
                    training=ctx.training_names.get(tid, row.training if row else ""),
                    training_id=tid,
                    step=number,
                    path=os.path.join(root, step_rel),
                    relparts=layout.validate_step_record(step_rel) or (),
                    files=tuple(files),
                    whole=sf is not None and len(files) == sf.files,
                    indexed_files=sf.files if sf is not None else len(files),
                )
            )
        steps.sort(key=lambda s: (s.training, s.step, s.path))
        mistudio = _mistudio_plan(steps, ctx, protected) if ctx.mistudio is not None else None
        return Plan(
            ctx.root_id,
            root,
            tuple(steps),
            (),
            tuple(protected),
            time.time(),
            foreign=tuple(foreign),
            training_dirs=self._emptied_trainings(steps, ctx),
            mistudio=mistudio,
        )

    @staticmethod
    def _emptied_trainings(steps: list[PlannedStep], ctx: _Context) -> tuple[tuple[str, ...], ...]:
        """Folders above the steps to rmdir-if-empty afterwards: for each training all of
        whose steps go whole, the folder holding the steps, then the training folder (when
        the former is ``checkpoints/``); deepest first, never the root."""
        planned: dict[int, set[int]] = defaultdict(set)
        for s in steps:
            if s.whole:
                planned[s.training_id].add(s.step_id)
        out: list[tuple[str, ...]] = []
        for tid, sids in planned.items():
            all_steps = {f.id for f in ctx.facts.get(tid, [])}
            rel = ctx.training_relpaths.get(tid)
            if rel is None or not all_steps or sids != all_steps:
                continue
            parts = layout.split_relpath(rel) if rel else None
            if not parts:
                continue  # the steps sit in the root itself: the root is never removed
            out.append(parts)
            if parts[-1] == layout.CHECKPOINTS_DIR and len(parts) > 1:
                out.append(parts[:-1])
        return tuple(sorted(set(out), key=lambda p: (-len(p), p)))


@dataclass(frozen=True, slots=True)
class _Context:
    root_id: int
    root: str
    facts: dict[int, list[stepfacts.StepFact]]
    pins: set[str]
    training_relpaths: dict[int, str]
    training_names: dict[int, str]
    busy: dict[tuple[int, int], str]
    wanted_steps: set[int]
    force: bool
    include_open: bool
    include_foreign: bool
    mistudio: Snapshot | None = None
    stale: _StaleScope | None = None  # --stale-records


def _mistudio_plan(
    steps: list[PlannedStep], ctx: _Context, protected: list[Protected]
) -> MiStudioPlan:
    """The rows of the planned files (deleted once every planned file of their step is
    gone), and the stale rows in scope: deleted with --stale-records unless protected."""
    snap = ctx.mistudio
    assert snap is not None
    rows: list[MiStudioRow] = []
    links: list[tuple[int, str]] = []
    for s in steps:
        name = snap.step_training.get(s.step_id)
        if name is not None:
            links.append((s.step_id, name))
        for f in s.files:
            for row, path in snap.file_rows.get(f.file_id, ()):
                rows.append(
                    MiStudioRow(
                        row.id,
                        row.training_id,
                        row.step,
                        row.storage_path,
                        path,
                        s.step_id,
                        f.file_id,
                        row.is_best,
                    )
                )
    planned = {r.id for r in rows}
    stale: list[MiStudioRow] = []
    left = 0
    scope = ctx.stale
    for st in snap.stale:
        if st.row.id in planned:
            continue  # goes with its step (the file is already gone)
        in_scope = scope is None or scope.trainings is None or st.training in scope.trainings
        if scope is None or not in_scope:
            left += 1 if in_scope else 0
            continue
        needs = () if ctx.force else snap.stale_protection(st)
        if needs:
            protected.append(
                Protected(
                    st.path,
                    f"stale miStudio row {st.row.id}, {'; '.join(needs)}; --force to include",
                )
            )
            continue
        r = st.row
        stale.append(
            MiStudioRow(r.id, r.training_id, r.step, r.storage_path, st.path, is_best=r.is_best)
        )
    stale.sort(key=lambda r: (r.training_id, r.step, r.storage_path))
    return MiStudioPlan(
        snap.database, tuple(rows), tuple(stale), left, tuple(links), force=ctx.force
    )


def _mistudio_metrics(
    metrics: dict[int, dict[str, float | None]],
    facts: dict[int, list[stepfacts.StepFact]],
    snap: Snapshot,
    key: str,
) -> None:
    """``--best loss`` / ``--best l0_sparsity``: a training none of whose files carries the
    key in ``__metadata__`` is ranked by miStudio's mean over each step's rows (a step with
    no row stays unknown: kept, not guessed)."""
    if key not in ("loss", "l0_sparsity"):
        return
    for steps in facts.values():
        if any(f.id in metrics for f in steps):
            continue  # the files' own metadata decides
        for f in steps:
            info = snap.steps.get(f.id)
            if info is None or not info.rows:
                continue
            value = info.loss if key == "loss" else info.l0_sparsity
            if value is not None:
                metrics[f.id] = {key: value}


def _settle_links(files_by_step: dict[int, list[PlannedFile]]) -> None:
    """A hard-linked file frees its bytes once, when its last link goes: when every link is
    in the plan, the last one in deletion order is marked ``last_link``; with a link
    outside the plan, none frees anything (``nlink`` as scanned)."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for sid, files in files_by_step.items():
        for i, f in enumerate(files):
            if f.nlink > 1 and not f.is_symlink:
                groups[(f.dev, f.inode)].append((sid, i))
    for members in groups.values():
        first_sid, first_i = members[0]
        nlink = files_by_step[first_sid][first_i].nlink
        if len(members) >= nlink:
            sid, i = members[-1]
            files_by_step[sid][i] = replace(files_by_step[sid][i], last_link=True)


def _training_folders(steps_parent: str) -> tuple[tuple[str, ...], ...]:
    """The folders that name a whole training: the steps' parent, and the folder above it
    when that is ``checkpoints/``."""
    parts = tuple(p for p in steps_parent.split("/") if p)
    if parts and parts[-1] == layout.CHECKPOINTS_DIR:
        return (parts, parts[:-1])
    return (parts,)


def _number(value: object) -> float | None:
    try:
        f = float(str(value))
    except ValueError:
        return None
    return None if f != f else f


def _components(path: str) -> tuple[str, ...]:
    """Components of an absolute, normalised path; compared whole, never as string prefixes."""
    return tuple(p for p in os.path.abspath(os.path.expanduser(path)).split("/") if p)

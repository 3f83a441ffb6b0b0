"""miStudio's PostgreSQL database: trainings' status and checkpoint rows, matched to the files
under a root; checkpoint rows deleted after their files, in miStudio's own order.

Imported only when a miStudio URL is given (``--mistudio`` or ``$CKPT_TUI_MISTUDIO_URL``).
Reads run in READ ONLY transactions. The only write is ``DELETE FROM checkpoints`` of rows
named by (id, storage_path) as they were read: never a ``trainings`` row, never another table.

Rows are matched to files by the path under ``<training_id>/checkpoints/``: miStudio stores
``/data/trainings/<id>/checkpoints/checkpoint_<step>/layer_<n>_<hook>/checkpoint.safetensors``
as its container sees it, the user opens the host folder (``./backend/data/trainings``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    String,
    column,
    delete,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ckpt_tui.db import Database, FileRow, Step, Training
from ckpt_tui.errors import CkptError
from ckpt_tui.types import MISTUDIO_ACTIVE, MiStudioStep, MiStudioTraining, StaleTraining

log = logging.getLogger(__name__)

ACTIVE = MISTUDIO_ACTIVE  # miStudio's retention skips these
BEST = "best in miStudio"
NO_RECORD = "no miStudio record"
CHECKPOINTS_DIR = "checkpoints"
TRAININGS_DIR = "trainings"
CONNECT_TIMEOUT = 10.0  # seconds
CHUNK = 1000  # values per IN (...) clause
REQUIRED = {
    "trainings": ("id", "status"),
    "checkpoints": ("id", "training_id", "step", "loss", "l0_sparsity", "storage_path", "is_best"),
}

T = TypeVar("T")

_trainings = table("trainings", column("id", String), column("status", String))
_checkpoints = table(
    "checkpoints",
    column("id", String),
    column("training_id", String),
    column("step", Integer),
    column("loss", Float),
    column("l0_sparsity", Float),
    column("storage_path", String),
    column("is_best", Boolean),
)


class MiStudioError(CkptError):
    """miStudio's database cannot be used: bad URL, unreachable, wrong schema, no permission."""


def active_reason(status: str) -> str:
    return f"active training: {status}"


def to_url(raw: str) -> str:
    """miStudio's ``DATABASE_URL`` (``postgresql+asyncpg://``, ``postgresql://`` or
    ``postgres://``) as an asyncpg URL for SQLAlchemy."""
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        raise MiStudioError(
            f"--mistudio {_hide(raw)!r} is not a database URL "
            "(postgresql+asyncpg://user:password@host:port/database)"
        ) from None
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise MiStudioError(
            f"--mistudio needs miStudio's PostgreSQL URL, not {url.get_backend_name()!r} "
            "(postgresql+asyncpg://user:password@host:port/database)"
        )
    if not url.database:
        raise MiStudioError("--mistudio URL names no database (…@host:port/database)")
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _hide(raw: str) -> str:
    try:
        return make_url(raw.strip()).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable>"


def _sqlstate(exc: BaseException) -> str | None:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(state, str) and state:
            return state
        stack += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    base = orig if isinstance(orig, BaseException) else exc
    cause = base.__cause__ if base.__cause__ is not None else base
    words = str(cause).strip() or type(cause).__name__
    return words.splitlines()[0]


class MiStudio:
    """A connection pool to miStudio's database, opened on first use."""

    def __init__(self, url: str) -> None:
        self.url = to_url(url)
        u = make_url(self.url)
        user = f"{u.username}@" if u.username else ""
        self.display = f"{user}{u.host or 'localhost'}:{u.port or 5432}/{u.database}"
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            try:
                self._engine = create_async_engine(
                    self.url,
                    connect_args={
                        "timeout": CONNECT_TIMEOUT,
                        "server_settings": {"application_name": "ckpt-tui"},
                    },
                )
            except ImportError:
                raise MiStudioError(
                    "--mistudio needs asyncpg: pip install 'ckpt-tui[postgres]'"
                ) from None
            except (SQLAlchemyError, ValueError) as exc:
                raise MiStudioError(f"cannot use miStudio database {self.display}: {exc}") from None
        return self._engine

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def _explain(self, exc: BaseException) -> MiStudioError:
        state = _sqlstate(exc)
        why = _first_line(exc)
        where = f"miStudio database {self.display}"
        if state == "42501":
            return MiStudioError(f"permission denied in {where}: {why}")
        if state in ("42P01", "42703", "3F000"):
            return MiStudioError(f"{where} does not have miStudio's schema: {why}")
        if state in ("28P01", "28000"):
            return MiStudioError(f"{where} refused the login: {why}")
        if state == "3D000":
            return MiStudioError(f"{where} does not exist: {why}")
        if isinstance(exc, TimeoutError):
            why = f"no answer in {CONNECT_TIMEOUT:g} s"
        return MiStudioError(f"{where} is unreachable: {why}")

    async def _read(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SET TRANSACTION READ ONLY"))
                out = await fn(conn)
                await conn.rollback()
                return out
        except (DBAPIError, SQLAlchemyError, OSError, TimeoutError) as exc:
            raise self._explain(exc) from None

    async def check(self, *, write: bool = False) -> None:
        """Reachable, miStudio's tables and columns present, and (``write``) allowed to
        delete checkpoint rows; else one MiStudioError naming the problem."""

        async def q(conn: AsyncConnection) -> None:
            found = (
                await conn.execute(
                    text(
                        "SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = ANY (current_schemas(false)) "
                        "AND table_name IN ('trainings', 'checkpoints')"
                    )
                )
            ).all()
            have: dict[str, set[str]] = defaultdict(set)
            for tname, cname in found:
                have[str(tname)].add(str(cname))
            for tname, cols in REQUIRED.items():
                if tname not in have:
                    raise MiStudioError(
                        f"miStudio database {self.display} does not have miStudio's schema: "
                        f"no table {tname!r} (is this miStudio's DATABASE_URL?)"
                    )
                missing = [c for c in cols if c not in have[tname]]
                if missing:
                    raise MiStudioError(
                        f"miStudio database {self.display} does not have miStudio's schema: "
                        f"table {tname!r} has no column {', '.join(missing)}"
                    )
            # SELECT rights on both (a permission error surfaces here, before any plan)
            await conn.execute(select(_trainings.c.id).limit(1))
            await conn.execute(select(_checkpoints.c.id).limit(1))
            if write:
                ok = (
                    await conn.execute(text("SELECT has_table_privilege('checkpoints', 'DELETE')"))
                ).scalar()
                if not ok:
                    user = (await conn.execute(text("SELECT current_user"))).scalar()
                    raise MiStudioError(
                        f"permission denied in miStudio database {self.display}: user {user} "
                        "may not DELETE from checkpoints; nothing was deleted"
                    )

        await self._read(q)

    async def statuses(self, ids: Iterable[str] | None = None) -> dict[str, str]:
        """miStudio training id -> status (all trainings, or those named)."""
        wanted = None if ids is None else sorted(set(ids))

        async def q(conn: AsyncConnection) -> dict[str, str]:
            out: dict[str, str] = {}
            if wanted is None:
                chunks: list[list[str] | None] = [None]
            else:
                chunks = [wanted[i : i + CHUNK] for i in range(0, len(wanted), CHUNK)]
            for chunk in chunks:
                stmt = select(_trainings.c.id, _trainings.c.status)
                if chunk is not None:
                    stmt = stmt.where(_trainings.c.id.in_(chunk))
                for tid, status in (await conn.execute(stmt)).all():
                    out[str(tid)] = str(status)
            return out

        return await self._read(q)

    async def rows(self, training_ids: Iterable[str]) -> list[Row]:
        ids = sorted(set(training_ids))

        async def q(conn: AsyncConnection) -> list[Row]:
            out: list[Row] = []
            c = _checkpoints.c
            for i in range(0, len(ids), CHUNK):
                stmt = select(
                    c.id, c.training_id, c.step, c.loss, c.l0_sparsity, c.storage_path, c.is_best
                ).where(c.training_id.in_(ids[i : i + CHUNK]))
                for rid, tid, step, loss, l0, path, best in (await conn.execute(stmt)).all():
                    out.append(
                        Row(
                            str(rid),
                            str(tid),
                            int(step),
                            _float(loss),
                            _float(l0),
                            str(path),
                            bool(best),
                        )
                    )
            return out

        return await self._read(q) if ids else []

    async def current(
        self, training_ids: Iterable[str], row_ids: Iterable[str]
    ) -> tuple[dict[str, str], set[str]]:
        """(status of each training, which of the rows are ``is_best``) now: the check
        before a batch's unlinks."""
        tids = sorted(set(training_ids))
        rids = sorted(set(row_ids))

        async def q(conn: AsyncConnection) -> tuple[dict[str, str], set[str]]:
            statuses: dict[str, str] = {}
            best: set[str] = set()
            for i in range(0, len(tids), CHUNK):
                stmt = select(_trainings.c.id, _trainings.c.status).where(
                    _trainings.c.id.in_(tids[i : i + CHUNK])
                )
                statuses.update((str(a), str(b)) for a, b in (await conn.execute(stmt)).all())
            for i in range(0, len(rids), CHUNK):
                best_q = select(_checkpoints.c.id).where(
                    _checkpoints.c.id.in_(rids[i : i + CHUNK]), _checkpoints.c.is_best
                )
                best.update(str(r) for r in (await conn.execute(best_q)).scalars())
            return statuses, best

        return await self._read(q)

    async def delete_rows(self, rows: Sequence[tuple[str, str]]) -> int:
        """Delete checkpoint rows by (id, storage_path) as they were read, in one
        transaction; the number deleted. A row changed since (another path) is kept."""
        pairs = sorted(set(rows))
        if not pairs:
            return 0
        n = 0
        try:
            async with self.engine.begin() as conn:
                key = tuple_(_checkpoints.c.id, _checkpoints.c.storage_path)
                for i in range(0, len(pairs), CHUNK):
                    res = await conn.execute(
                        delete(_checkpoints).where(key.in_(pairs[i : i + CHUNK]))
                    )
                    n += max(0, res.rowcount or 0)
        except (DBAPIError, SQLAlchemyError, OSError, TimeoutError) as exc:
            raise self._explain(exc) from None
        return n


@dataclass(frozen=True, slots=True)
class Row:
    """One row of miStudio's ``checkpoints`` table."""

    id: str
    training_id: str
    step: int
    loss: float | None
    l0_sparsity: float | None
    storage_path: str
    is_best: bool


@dataclass(frozen=True, slots=True)
class Stale:
    """A row whose file is gone."""

    row: Row
    path: str  # where its file would be on this machine
    training: int | None  # the index's training, None when no step folder of it is left
    status: str


@dataclass(slots=True)
class Snapshot:
    """miStudio's rows matched to one root's index (see ``snapshot``)."""

    database: str
    trainings: dict[int, MiStudioTraining] = field(default_factory=dict)  # index training id
    steps: dict[int, MiStudioStep] = field(default_factory=dict)  # every step of those
    step_training: dict[int, str] = field(default_factory=dict)  # step id -> miStudio id
    step_status: dict[int, str] = field(default_factory=dict)
    file_rows: dict[int, list[tuple[Row, str]]] = field(default_factory=dict)  # (row, path)
    stale: list[Stale] = field(default_factory=list)
    stale_only: list[StaleTraining] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    unrecognised: int = 0

    def protection(self, step_id: int) -> tuple[str, ...]:
        """Why miStudio needs this step (lifted by ``force``): its training is active, it
        is the best step."""
        out: list[str] = []
        status = self.step_status.get(step_id)
        if status in ACTIVE:
            out.append(active_reason(status))
        info = self.steps.get(step_id)
        if info is not None and info.is_best:
            out.append(BEST)
        return tuple(out)

    def stale_protection(self, s: Stale) -> tuple[str, ...]:
        """Why a stale row stays (lifted by ``force``): its training is active. A best row
        whose file is gone protects nothing (miStudio could not resume from it): it goes,
        shown as best in the dry run."""
        return (active_reason(s.status),) if s.status in ACTIVE else ()


def storage_rest(storage_path: str, training_id: str) -> tuple[str, ...] | None:
    """The components of a stored path below ``<training_id>/checkpoints/`` (the last such
    place), or None when it has none or climbs with ``..``."""
    parts = [p for p in storage_path.replace("\\", "/").split("/") if p and p != "."]
    if ".." in parts:
        return None
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == training_id and parts[i + 1] == CHECKPOINTS_DIR:
            rest = tuple(parts[i + 2 :])
            return rest or None
    return None


def training_id_of(steps_path: str) -> str | None:
    """The miStudio training id a folder of steps belongs to: the name above ``checkpoints/``."""
    parts = _components(steps_path)
    if len(parts) >= 2 and parts[-1] == CHECKPOINTS_DIR:
        return parts[-2]
    return None


def _components(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


def _join(*parts: str) -> str:
    return "/" + "/".join(p for part in parts for p in part.split("/") if p)


def within(path: str, root: str) -> bool:
    a, b = _components(path), _components(root)
    return a[: len(b)] == b


def _trainings_dir(root: str, parents: Iterable[str]) -> str | None:
    """The host folder that miStudio sees as ``/data/trainings``: the parent of the matched
    training folders, else the root's own ``trainings`` folder or ancestor."""
    found = set(parents)
    if len(found) == 1:
        return found.pop()
    if found:
        return None  # several: only the matched trainings are trusted
    parts = _components(root)
    if TRAININGS_DIR in parts:
        last = len(parts) - 1 - parts[::-1].index(TRAININGS_DIR)
        return _join(*parts[: last + 1])
    inner = os.path.join(root, TRAININGS_DIR)
    if os.path.isdir(inner) and not os.path.islink(inner):
        return _join(root, TRAININGS_DIR)
    return None


def _gone(path: str) -> bool:
    """The file is not there (a stale row); an unreadable place is never called gone."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def gone_paths(paths: Iterable[str]) -> set[str]:
    """Which of ``paths`` do not exist (blocking: run it in a thread)."""
    return {p for p in paths if _gone(p)}


def _float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def _mean(values: Iterable[float | None]) -> float | None:
    nums = [v for v in values if v is not None]
    return sum(nums) / len(nums) if nums else None


async def snapshot(
    db: Database,
    mi: MiStudio,
    root_id: int,
    root: str,
    training_ids: Iterable[int] | None = None,
    *,
    stale_only: bool = False,
) -> Snapshot:
    """Match miStudio's rows to the indexed trainings, steps and files of a root.

    A training folder matches the miStudio training whose id is its name (the folder above
    ``checkpoints/``); an id found in two folders under the root matches neither. With
    ``training_ids``, only those trainings' rows are read. ``stale_only`` also reads the
    miStudio trainings with no indexed folder whose folder would lie under the root
    (every row of theirs whose file is gone is stale)."""
    snap = Snapshot(mi.display)
    async with db.sessions() as session:
        q = select(Training.id, Training.relpath).where(Training.root_id == root_id)
        indexed = [(t, r) for t, r in (await session.execute(q)).all() if isinstance(r, str)]
    steps_path: dict[int, str] = {}
    by_name: dict[str, list[int]] = defaultdict(list)
    for tid, rel in indexed:
        path = _join(root, rel)
        name = training_id_of(path)
        if name is not None:
            steps_path[tid] = path
            by_name[name].append(tid)
    statuses = await mi.statuses()
    matched: dict[int, str] = {}
    for name, tids in by_name.items():
        if name not in statuses:
            continue
        if len(tids) > 1:
            snap.ambiguous[name] = sorted(os.path.dirname(steps_path[t]) for t in tids)
            continue
        matched[tids[0]] = name
    wanted = None if training_ids is None else set(training_ids)
    chosen = {t: n for t, n in matched.items() if wanted is None or t in wanted}
    folders: dict[str, str] = {}  # miStudio id with no indexed folder -> where it would be
    if stale_only and wanted is None:
        parents = (os.path.dirname(os.path.dirname(steps_path[t])) for t in matched)
        tdir = _trainings_dir(root, parents)
        if tdir is not None:
            for name in statuses:
                if name in by_name:
                    continue
                where = _join(tdir, name)
                if within(where, root) or within(root, where):
                    folders[name] = where
    rows = await mi.rows([*chosen.values(), *folders])
    tid_of = {n: t for t, n in chosen.items()}
    # the index side of the chosen trainings: step folders and files
    step_of: dict[tuple[int, str], int] = {}
    file_of: dict[tuple[int, str], int] = {}
    rel_of = dict(indexed)
    ids = sorted(chosen)
    async with db.sessions() as session:
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            q2 = select(Step.id, Step.training_id, Step.relpath).where(Step.training_id.in_(chunk))
            for sid, tid, srel in (await session.execute(q2)).all():
                if not isinstance(srel, str):
                    continue
                trel = rel_of.get(tid, "")
                inner = srel[len(trel) + 1 :] if trel and srel.startswith(trel + "/") else srel
                step_of[(tid, inner)] = sid
                snap.step_training[sid] = chosen[tid]
                snap.step_status[sid] = statuses[chosen[tid]]
            q3 = (
                select(FileRow.id, FileRow.step_id, FileRow.relpath)
                .join(Step, Step.id == FileRow.step_id)
                .where(Step.training_id.in_(chunk))
            )
            for fid, sid, frel in (await session.execute(q3)).all():
                if isinstance(frel, str):
                    file_of[(sid, frel)] = fid
    placed: list[tuple[Row, str, int | None]] = []
    by_step: dict[int, list[Row]] = defaultdict(list)
    for row in rows:
        rest = storage_rest(row.storage_path, row.training_id)
        if rest is None:
            snap.unrecognised += 1
            continue
        owner = tid_of.get(row.training_id)
        if owner is not None:
            path = _join(steps_path[owner], *rest)
            step_id = step_of.get((owner, rest[0]))
            if step_id is not None:
                by_step[step_id].append(row)
                file_id = file_of.get((step_id, "/".join(rest[1:])))
                if file_id is not None:
                    snap.file_rows.setdefault(file_id, []).append((row, path))
        else:
            path = _join(folders[row.training_id], CHECKPOINTS_DIR, *rest)
            if not within(path, root):
                continue
        placed.append((row, path, owner))
    gone = await asyncio.to_thread(gone_paths, [p for _r, p, _t in placed])
    stale_count: dict[str, int] = defaultdict(int)
    for row, path, owner in placed:
        if path in gone:
            snap.stale.append(Stale(row, path, owner, statuses.get(row.training_id, "")))
            stale_count[row.training_id] += 1
    for tid, name in chosen.items():
        snap.trainings[tid] = MiStudioTraining(name, statuses[name], stale_count.get(name, 0))
    for sid in snap.step_training:
        rs = by_step.get(sid, [])
        snap.steps[sid] = MiStudioStep(
            rows=len(rs),
            is_best=any(r.is_best for r in rs),
            loss=_mean(r.loss for r in rs),
            l0_sparsity=_mean(r.l0_sparsity for r in rs),
        )
    for name, where in sorted(folders.items()):
        if stale_count.get(name):
            snap.stale_only.append(StaleTraining(name, statuses[name], where, stale_count[name]))
    return snap

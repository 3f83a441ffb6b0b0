"""Engine set-up: URL resolution, per-connection pragmas, schema version and integrity checks."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import platformdirs
from sqlalchemy import event, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ckpt_tui.db.models import ROLE_ARTIFACT, SCHEMA_VERSION, Base, Meta
from ckpt_tui.errors import IndexBusy, IndexError_

APP_NAME = "ckpt-tui"
ENV_DB = "CKPT_TUI_DB"
BUSY_TIMEOUT_MS = 5_000


def default_db_url() -> str:
    """``$CKPT_TUI_DB`` if set, else a file in the user data directory (never in a root)."""
    env = os.environ.get(ENV_DB)
    if env:
        return to_url(env)
    data = Path(platformdirs.user_data_dir(APP_NAME))
    return to_url(str(data / "index.sqlite3"))


def to_url(db: str) -> str:
    """Accept a file path or an SQLAlchemy async URL."""
    if "://" in db:
        return db
    return f"sqlite+aiosqlite:///{Path(db).expanduser().resolve()}"


_encode_json = msgspec.json.Encoder().encode


def json_text(value: Any) -> str:
    """JSON text of a column value, by msgspec (C): several times faster than ``json.dumps``
    for the header summaries a first scan stores per file; decoded by ``json``-compatible
    readers alike."""
    return _encode_json(value).decode()


def display_url(db: str | None) -> str:
    """The index as a user names it: a file path, or the URL with its password hidden."""
    url = make_url(to_url(db) if db else default_db_url())
    if url.get_backend_name() == "sqlite" and url.database:
        return str(url.database)
    return url.render_as_string()


def describe_error(exc: BaseException) -> str:
    """The driver's message on one line, without SQLAlchemy's SQL echo and links."""
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc)
    return msg.splitlines()[0] if msg else type(exc).__name__


def is_locked_error(exc: BaseException) -> bool:
    return "database is locked" in describe_error(exc) or "database is busy" in describe_error(exc)


@dataclass
class Database:
    """An async engine plus what the service needs to know about where it lives."""

    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    lock_path: Path
    sqlite_path: Path | None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def display(self) -> str:
        return str(self.sqlite_path) if self.sqlite_path else make_url(self.url).render_as_string()

    async def dispose(self) -> None:
        await _closing_connections()
        await self.engine.dispose()
        await _closing_connections()  # and those that disposing closed


CLOSE_WAIT_SECONDS = 10.0


async def _closing_connections() -> None:
    """Let connections SQLAlchemy is still closing finish first. A connection given back by
    a task cancelled mid-query is terminated by a task of its own that closes it through the
    driver's thread; with the engine disposed under it, that task waited forever and the
    event loop could never close (seen as a hung exit under load)."""
    me = asyncio.current_task()
    closing = [
        t
        for t in asyncio.all_tasks()
        if t is not me
        and not t.done()
        and getattr(t.get_coro(), "__qualname__", "").endswith("_terminate_graceful_close")
    ]
    if closing:
        await asyncio.wait(closing, timeout=CLOSE_WAIT_SECONDS)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


def _lock_path_for(url: str, sqlite_path: Path | None) -> Path:
    if sqlite_path is not None:
        return sqlite_path.with_name(sqlite_path.name + ".lock")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir(APP_NAME)) / "locks" / f"{digest}.lock"


async def open_database(db: str | None = None, *, create: bool = True) -> Database:
    """Open (and create or verify) the index; raises IndexError_/IndexBusy with one line."""
    url = to_url(db) if db else default_db_url()
    try:
        parsed = make_url(url)
    except SQLAlchemyError as exc:
        raise IndexError_(f"index URL {db!r} is not valid: {describe_error(exc)}") from None
    sqlite_path: Path | None = None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        sqlite_path = Path(str(parsed.database))
        if sqlite_path.is_dir():
            raise IndexError_(f"index {sqlite_path} is a directory, not a database file")
        if not sqlite_path.exists() and not create:
            raise IndexError_(f"index {sqlite_path} does not exist")
        try:
            sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexError_(f"cannot create the index directory: {exc}") from None
    try:
        engine = create_async_engine(url, json_serializer=json_text)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise IndexError_(f"cannot use index {db or url}: {describe_error(exc)}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    database = Database(
        url=url,
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        lock_path=_lock_path_for(url, sqlite_path),
        sqlite_path=sqlite_path,
    )
    where = str(sqlite_path) if sqlite_path else parsed.render_as_string()
    try:
        await _prepare(database)
    except (IndexError_, IndexBusy):
        await engine.dispose()
        raise
    except (DBAPIError, SQLAlchemyError, OSError) as exc:
        await engine.dispose()
        if is_locked_error(exc):
            raise IndexBusy(f"index {where} is locked by another process") from None
        raise IndexError_(f"index {where} cannot be used: {describe_error(exc)}") from None
    return database


async def _prepare(database: Database) -> None:
    # No integrity check here: PRAGMA quick_check reads the whole file (0.1-0.2 s at 100k
    # files, paid by every command and the TUI's first frame). A deletion runs it before it
    # claims anything (``check_integrity``); any other read or write that meets a damaged
    # page fails with one line naming the index.
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        found = (
            await conn.execute(select(Meta.value).where(Meta.key == "schema_version"))
        ).scalar()
        if found is None:
            await conn.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
        elif found == "1":
            await _upgrade_from_1(conn)
        elif found != str(SCHEMA_VERSION):
            raise IndexError_(
                f"index {database.display} has schema version {found}; this ckpt-tui "
                f"understands version {SCHEMA_VERSION}: use a matching release or a new --db"
            )


async def check_integrity(database: Database) -> None:
    """IndexError_ when SQLite's ``quick_check`` finds the index damaged; a deletion runs
    this under its lock, before it claims anything (PostgreSQL checks its own pages)."""
    if not database.is_sqlite:
        return
    async with database.engine.connect() as conn:
        row = (await conn.execute(text("PRAGMA quick_check"))).scalar()
    if row != "ok":
        found = " ".join(str(row).split())  # SQLite's report spans lines: one line here
        raise IndexError_(
            f"index {database.display} is corrupt (quick_check: {found}); nothing was deleted"
        )


async def _upgrade_from_1(conn: AsyncConnection) -> None:
    """Version 1 -> 2. The index is a cache of the disk except for pins: pins move to the
    ``pins`` table by absolute path, the rows are dropped and every root is marked not
    scanned, so the next scan classifies files (artifact / foreign) and steps afresh."""
    await conn.execute(
        text(
            "INSERT INTO pins (path, pinned_at) "
            "SELECT DISTINCT roots.path || '/' || steps.relpath, 0 FROM steps "
            "JOIN trainings ON trainings.id = steps.training_id "
            "JOIN roots ON roots.id = trainings.root_id WHERE steps.pinned"
        )
    )
    for table in ("files", "steps", "trainings"):
        await conn.execute(text(f"DELETE FROM {table}"))
    await conn.execute(
        text(f"ALTER TABLE files ADD COLUMN role VARCHAR(16) DEFAULT '{ROLE_ARTIFACT}'")
    )
    await conn.execute(text("ALTER TABLE files ADD COLUMN claimed_at FLOAT"))
    await conn.execute(text("ALTER TABLE files ADD COLUMN claimed_by INTEGER"))
    await conn.execute(text("UPDATE roots SET scanned_at = NULL"))
    await conn.execute(
        update(Meta).where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION))
    )

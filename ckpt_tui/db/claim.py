"""A deletion claim held in the database, so deleters on different machines are serialised.

PostgreSQL: a session-level advisory lock on a connection held for the whole run; the server
drops it if that process dies, so a crash never leaves a stale claim. SQLite lives on one
machine, where the lock file in ``deletion`` already serialises deleters: no-op there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text

from ckpt_tui.db.engine import Database
from ckpt_tui.errors import IndexBusy

# pg advisory locks take a bigint key; this one is ckpt-tui's, constant across releases.
CLAIM_KEY = 0x636B70745F747569  # "ckpt_tui"


@asynccontextmanager
async def deletion_claim(db: Database) -> AsyncIterator[None]:
    """Hold the index-wide deletion claim; IndexBusy at once if another deleter has it."""
    if db.engine.dialect.name != "postgresql":
        yield
        return
    async with db.engine.connect() as conn:
        got = (
            await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": CLAIM_KEY})
        ).scalar()
        await conn.commit()
        if not got:
            raise IndexBusy(
                f"index {db.display} is busy: another ckpt-tui (maybe on another machine) is "
                "deleting; try again when it finishes"
            )
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": CLAIM_KEY})
            await conn.commit()

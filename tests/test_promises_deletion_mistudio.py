"""What a deletion run does with miStudio's database, pinned where mutating
``ckpt_tui/deletion.py`` went unnoticed (issue 14): the checks before anything is touched
(the plan's database open here, the same one, DELETE rights), the check again before a
batch's unlinks (a training that became active since the plan), and the repair of what an
interrupted run left (rows of files gone, intents of another database, damaged intents).

Real PostgreSQL (CKPT_TUI_TEST_PG_URL) with miStudio's schema from ``tests/test_mistudio.py``,
real safetensors files in ``tmp_path``, a real SQLite index read back with ``sqlite3``, the
real service; the oracles are the disk, the index and miStudio's rows, never the plan.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt_tui.mistudio import MiStudioError
from ckpt_tui.protection import Protection
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import DeleteProgress, ExecuteResult, Outcome
from tests.conftest import _pg_admin, fresh_pg_db, make_training, write_checkpoint
from tests.test_mistudio import (
    DONE,
    LIVE,
    LOSSES,
    SCHEMA,
    MiDB,
    db,
    layer_dirs,
    mi,
    on_disk,
    read_only_url,
    snapshot_disk,
    studio,
)
from tests.test_promises_planning_mut import _sql

__all__ = ["db", "mi", "read_only_url"]  # the fixtures, shared with tests/test_mistudio.py

PLAIN = "m_plain"  # a training on disk that miStudio never recorded
DEL = "ckpt_tui.deletion"


def _display(url: str) -> str:
    """How ckpt-tui names a database: user@host:port/db, from the URL itself."""
    return url.split("://", 1)[1]


def _indexed_files(db: str, root: Path) -> dict[str, tuple[int, int]]:
    """Absolute path -> (file id, step id) of every file row, read with sqlite3."""
    rows = _sql(
        db, "SELECT f.id, s.id, s.relpath, f.relpath FROM files f JOIN steps s ON s.id = f.step_id"
    )
    return {
        str(root / str(sr) / str(fr)): (int(str(fid)), int(str(sid))) for fid, sid, sr, fr in rows
    }


def _intents(db: str) -> dict[str, dict[str, object]]:
    """The miStudio intents left in the index's meta table (key -> document)."""
    rows = _sql(db, "SELECT key, value FROM meta WHERE key LIKE 'mistudio-pending:%'")
    return {str(k): json.loads(str(v)) for k, v in rows}


async def _open(db: str, url: str | None) -> CheckpointService:
    return await CheckpointService.open(
        db, protection=Protection(recent_seconds=0), mistudio=url if url is not None else ""
    )


@pytest.fixture
def other() -> Iterator[MiDB]:
    """A second miStudio database (its schema, no rows) on the same server."""
    with fresh_pg_db() as url:
        second = MiDB(url)
        second.script(SCHEMA)
        yield second


def _step(root: Path, tid: str, n: int) -> Path:
    return root / tid / "checkpoints" / f"checkpoint_{n}"


# before anything is touched ---------------------------------------------------------------


async def test_a_plan_with_mistudio_rows_is_refused_where_mistudio_is_not_open(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    root = await asyncio.to_thread(studio, tmp_path, mi)
    rows, disk = await asyncio.to_thread(mi.dump), snapshot_disk(root)
    async with await _open(db, mi.url) as svc:
        plan = await svc.plan_retention((await svc.indexed_root(str(root))).id, 1)
    index = _indexed_files(db, root)
    async with await _open(db, None) as bare:
        with pytest.raises(MiStudioError) as err:
            await bare.execute(plan)
    assert str(err.value) == (
        f"the plan deletes rows of miStudio database {_display(mi.url)}, which is not "
        "open here (--mistudio); nothing was deleted"
    )
    assert snapshot_disk(root) == disk and await asyncio.to_thread(mi.dump) == rows
    assert _indexed_files(db, root) == index


async def test_a_plan_made_against_another_mistudio_database_is_refused(
    tmp_path: Path, mi: MiDB, other: MiDB, db: str
) -> None:
    root = await asyncio.to_thread(studio, tmp_path, mi)
    rows, disk = await asyncio.to_thread(mi.dump), snapshot_disk(root)
    async with await _open(db, mi.url) as svc:
        plan = await svc.plan_retention((await svc.indexed_root(str(root))).id, 1)
    index = _indexed_files(db, root)
    await asyncio.to_thread(other.add_training, DONE, "completed", LOSSES)
    other_rows = await asyncio.to_thread(other.dump)
    async with await _open(db, other.url) as svc:
        with pytest.raises(MiStudioError) as err:
            await svc.execute(plan)
    assert await asyncio.to_thread(other.dump) == other_rows
    assert str(err.value) == (
        f"the plan was made against miStudio database {_display(mi.url)}, not "
        f"{_display(other.url)}; nothing was deleted"
    )
    assert snapshot_disk(root) == disk and await asyncio.to_thread(mi.dump) == rows
    assert _indexed_files(db, root) == index


async def test_a_role_that_may_not_delete_rows_deletes_no_file(
    tmp_path: Path, mi: MiDB, db: str, read_only_url: str
) -> None:
    root = await asyncio.to_thread(studio, tmp_path, mi)
    rows, disk = await asyncio.to_thread(mi.dump), snapshot_disk(root)
    async with await _open(db, read_only_url) as svc:
        plan = await svc.plan_retention((await svc.indexed_root(str(root))).id, 1)
        assert [s.step for s in plan.steps] == [1000, 2000, 4000], "it may still plan"
        index = _indexed_files(db, root)
        with pytest.raises(MiStudioError) as err:
            await svc.execute(plan)
    role = read_only_url.split("//", 1)[1].split("@", 1)[0]
    assert str(err.value) == (
        f"permission denied in miStudio database {_display(read_only_url)}: user {role} "
        "may not DELETE from checkpoints; nothing was deleted"
    )
    assert snapshot_disk(root) == disk and await asyncio.to_thread(mi.dump) == rows
    assert _indexed_files(db, root) == index


# the check again before a batch's unlinks -------------------------------------------------


async def test_steps_of_a_training_that_became_active_since_the_plan_are_each_reported_and_kept(
    tmp_path: Path, mi: MiDB, db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Three steps of DONE go active in one batch with a step of another miStudio training
    and one of a training miStudio never recorded: every file of the three is reported
    skipped with the reason (its own id, step and path), the warning names each step, and
    the other two steps go with their rows."""
    root = await asyncio.to_thread(studio, tmp_path, mi, "completed")
    make_training(root, PLAIN, [1, 2], layer_dirs())
    async with await _open(db, mi.url) as svc:
        plan = await svc.plan_retention((await svc.indexed_root(str(root))).id, 1)
        planned = sorted((Path(s.path).parts[-3], s.step) for s in plan.steps)
        assert planned == [(PLAIN, 1), (DONE, 1000), (DONE, 2000), (DONE, 4000), (LIVE, 100)]
        index = _indexed_files(db, root)
        done_rows = await asyncio.to_thread(mi.steps, DONE)
        await mi.aexecute("UPDATE trainings SET status = 'running' WHERE id = $1", DONE)
        with caplog.at_level(logging.WARNING, logger=DEL):
            result = await svc.execute(plan)
    why = "active training: running (since the plan was made); not deleted"
    kept = {
        path: ids
        for path, ids in index.items()
        if any(f"/{DONE}/checkpoints/checkpoint_{n}/" in path for n in (1000, 2000, 4000))
    }
    assert len(kept) == 6
    assert sorted(
        (r.file_id, r.step_id, r.path, r.outcome, r.error) for r in result.results if r.error
    ) == sorted((fid, sid, path, Outcome.SKIPPED, why) for path, (fid, sid) in kept.items())
    assert len(result.results) == 6 + 2 + 2 and result.stopped is None
    gone = {r.path for r in result.results if r.outcome == Outcome.DELETED}
    assert gone == {
        str(_step(root, t, n) / d / "checkpoint.safetensors")
        for t, n in ((LIVE, 100), (PLAIN, 1))
        for d in layer_dirs()
    }
    warned = [r.getMessage() for r in caplog.records if r.name == DEL and r.levelname == "WARNING"]
    assert warned == [f"skipped {_step(root, DONE, n)}: {why}" for n in (1000, 2000, 4000)]
    assert on_disk(root, DONE) == sorted(LOSSES) and on_disk(root, LIVE) == [200, 300]
    assert on_disk(root, PLAIN) == [2]
    assert await asyncio.to_thread(mi.steps, DONE) == done_rows
    assert await asyncio.to_thread(mi.steps, LIVE) == {200: 2, 300: 2}
    assert result.mistudio is not None and result.mistudio.rows_deleted == 2
    left = _indexed_files(db, root)
    assert {p: left[p] for p in kept} == kept, "the skipped files keep their index rows"


# an interrupted run, then the repair ------------------------------------------------------


@pytest.fixture
def writer(mi: MiDB) -> Iterator[tuple[str, str]]:
    """(role, URL): miStudio's database through a role that may read and delete rows."""
    role = f"ckpt_rw_{uuid.uuid4().hex[:8]}"
    name = mi.url.rsplit("/", 1)[1]
    asyncio.run(_pg_admin(f"CREATE ROLE {role} LOGIN"))
    try:
        mi.script(
            f"GRANT CONNECT ON DATABASE {name} TO {role}; GRANT USAGE ON SCHEMA public TO {role};"
            f" GRANT SELECT, DELETE ON ALL TABLES IN SCHEMA public TO {role};"
        )
        yield role, mi.url.replace("//postgres@", f"//{role}@")
        mi.script(
            f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role};"
            f" REVOKE ALL ON SCHEMA public FROM {role}; REVOKE ALL ON DATABASE {name} FROM {role}"
        )
    finally:
        asyncio.run(_pg_admin(f"DROP ROLE IF EXISTS {role}"))


async def _interrupted(db: str, root: Path, mi: MiDB, role: str, url: str) -> ExecuteResult:
    """prune --keep 1 of the studio, during which miStudio's admin revokes the role's DELETE
    right (after the checks, while the files go): the files and their index rows go, the
    rows stay, the intent is left in the index. The right is granted back after."""
    revoked: list[bool] = []

    def revoke(_p: DeleteProgress) -> None:
        if not revoked:  # blocking the loop: the unlinks go on in their thread meanwhile
            t = threading.Thread(
                target=mi.script, args=(f"REVOKE DELETE ON checkpoints FROM {role}",)
            )
            t.start()
            t.join()
            revoked.append(True)

    async with await _open(db, url) as svc:
        plan = await svc.plan_retention((await svc.indexed_root(str(root))).id, 1)
        assert [s.step for s in plan.steps] == [1000, 2000, 4000]
        result = await svc.execute(plan, revoke)
    await mi.aexecute(f"GRANT DELETE ON checkpoints TO {role}")
    assert result.stopped is not None and "permission denied" in result.stopped
    assert on_disk(root, DONE) == [3000, 5000]
    assert await asyncio.to_thread(mi.steps, DONE) == {n: 2 for n in LOSSES}
    return result


async def _repair(db: str, root: Path, url: str) -> ExecuteResult:
    """The next deleting run: prune --keep 1 again (nothing new to delete)."""
    async with await _open(db, url) as svc:
        plan = await svc.plan_retention((await svc.indexed_root(str(root))).id, 1)
        assert plan.empty
        return await svc.execute(plan)


async def test_the_next_run_against_the_same_database_deletes_the_rows_of_files_still_gone(
    tmp_path: Path,
    mi: MiDB,
    other: MiDB,
    db: str,
    writer: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An interrupted run leaves the rows of three deleted steps and its intent: a deleting
    run against another miStudio database leaves that intent alone; the next one against
    this database deletes the rows of the two steps whose files are still gone, keeps those
    of the step one file of which was put back, drops the intent and says how many rows."""
    root = await asyncio.to_thread(studio, tmp_path, mi)
    role, url = writer
    await _interrupted(db, root, mi, role, url)
    (intent,) = _intents(db).values()
    assert intent["database"] == _display(url)
    # a deleting run against another miStudio database leaves this database's intent alone
    make_training(root, PLAIN, [1, 2], layer_dirs())
    async with await _open(db, other.url) as svc:
        info = await svc.indexed_root(str(root))
        await svc.scan(str(root))
        plan = await svc.plan_retention(info.id, 1, trainings=[PLAIN])
        assert [(Path(s.path).parts[-3], s.step) for s in plan.steps] == [(PLAIN, 1)]
        result = await svc.execute(plan)
    assert result.mistudio is not None and result.mistudio.repaired == 0
    assert list(_intents(db).values()) == [intent], "another database's intent stays"
    assert on_disk(root, PLAIN) == [2]
    assert await asyncio.to_thread(mi.steps, DONE) == {n: 2 for n in LOSSES}
    # one file of step 2000 is put back (a backup restored) before the next run
    write_checkpoint(_step(root, DONE, 2000) / layer_dirs()[0] / "checkpoint.safetensors", 2000)
    # the run against its own database deletes the rows of the steps whose files are gone
    with caplog.at_level(logging.INFO, logger=DEL):
        result = await _repair(db, root, url)
    assert result.mistudio is not None and result.mistudio.repaired == 4
    assert await asyncio.to_thread(mi.steps, DONE) == {2000: 2, 3000: 2, 5000: 2}
    assert _intents(db) == {}
    infos = [r.getMessage() for r in caplog.records if r.name == DEL and r.levelname == "INFO"]
    assert "deleted 4 miStudio rows an interrupted deletion left" in infos


async def test_damaged_intents_are_dropped_and_only_their_well_formed_steps_are_repaired(
    tmp_path: Path, mi: MiDB, db: str, writer: tuple[str, str]
) -> None:
    """The index is the user's (hand-edited, restored from a copy): an interrupted run's
    intent rewritten as three, with steps that are no object, lack their files or their
    rows, or name rows in a shape never written. Each well-formed step is repaired and
    counted across intents; every malformed part is ignored (its rows kept), nothing fails."""
    root = await asyncio.to_thread(studio, tmp_path, mi)
    role, url = writer
    await _interrupted(db, root, mi, role, url)
    ((key, intent),) = _intents(db).items()
    steps = intent["steps"]
    assert isinstance(steps, list)
    by_step = {int(str(s["s"]).rsplit("_", 1)[1]): s for s in steps}
    s1000, s2000, s4000 = by_step[1000], by_step[2000], by_step[4000]
    base = {"database": intent["database"], "at": intent["at"], "run": intent["run"]}
    damaged = {
        key: {
            **base,
            "steps": [
                "not a step",
                s1000,
                {"s": s4000["s"], "r": s4000["r"]},  # no files: its rows stay
                {"s": s4000["s"], "f": s4000["f"], "r": [[*r, "x"] for r in s4000["r"]]},
            ],
        },
        key + "b": {**base, "steps": [{"s": s2000["s"], "f": s2000["f"]}, s2000]},  # no rows
        key + "c": {**base, "steps": None},
    }
    _sql(db, "DELETE FROM meta WHERE key = ?", (key,))
    for k, doc in damaged.items():
        _sql(db, "INSERT INTO meta (key, value) VALUES (?, ?)", (k, json.dumps(doc)))
    result = await _repair(db, root, url)
    assert result.mistudio is not None and result.mistudio.repaired == 4
    assert result.stopped is None and result.mistudio.error is None
    assert await asyncio.to_thread(mi.steps, DONE) == {3000: 2, 4000: 2, 5000: 2}
    assert _intents(db) == {}

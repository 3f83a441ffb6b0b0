"""miStudio's database kept in step (issue 11): real PostgreSQL, real files, the real CLI.

The miStudio schema below is written from ../shared/MISTUDIO.md (all 98 migrations applied:
the columns and constraints ckpt-tui depends on, plus the tables that reference
``trainings`` and must never be touched). Rows are filled the way miStudio's training loop
writes them: one row per (step, layer, hook), all rows of a step in one commit after the
files, ``storage_path`` as the container sees it (``/data/trainings/...``),
``file_size_bytes`` NULL, ``is_best`` moved to each step whose average loss beats the best.

Every test looks at what a user would: the CLI's JSON and lines, the rows left in miStudio's
database, the files left on disk.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from ckpt_tui import fs
from ckpt_tui.cli import main
from ckpt_tui.deletion import Deleter
from ckpt_tui.mistudio import MiStudio
from ckpt_tui.planning import Protection
from ckpt_tui.service import CheckpointService
from tests.conftest import OLD, _pg_admin, fresh_pg_db, make_training

SCHEMA = """
CREATE TABLE models (
    id VARCHAR(255) PRIMARY KEY,
    name VARCHAR(500) NOT NULL
);
CREATE TABLE activation_extractions (
    id VARCHAR(255) PRIMARY KEY,
    model_id VARCHAR(255) NOT NULL REFERENCES models(id)
);
CREATE TABLE trainings (
    id VARCHAR(255) PRIMARY KEY,
    model_id VARCHAR(255) NOT NULL REFERENCES models(id) ON DELETE RESTRICT,
    dataset_id VARCHAR(255) NOT NULL,
    extraction_id VARCHAR(255) REFERENCES activation_extractions(id) ON DELETE RESTRICT,
    status VARCHAR(50) NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    current_step INTEGER NOT NULL,
    total_steps INTEGER NOT NULL,
    hyperparameters JSONB NOT NULL,
    checkpoint_dir VARCHAR(1000),
    logs_path VARCHAR(1000),
    current_loss DOUBLE PRECISION,
    current_l0_sparsity DOUBLE PRECISION,
    current_dead_neurons INTEGER,
    error_message TEXT,
    celery_task_id VARCHAR(255),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    dataset_ids JSONB NOT NULL DEFAULT '[]',
    extraction_ids JSONB DEFAULT '[]',
    finalized_from_step INTEGER
);
CREATE TABLE checkpoints (
    id VARCHAR(255) PRIMARY KEY,
    training_id VARCHAR(255) NOT NULL REFERENCES trainings(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    loss DOUBLE PRECISION NOT NULL,
    l0_sparsity DOUBLE PRECISION,
    storage_path VARCHAR(1000) NOT NULL,
    file_size_bytes BIGINT,
    is_best BOOLEAN NOT NULL,
    extra_metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_checkpoints_training_id ON checkpoints (training_id);
CREATE INDEX idx_checkpoints_training_step ON checkpoints (training_id, step);
CREATE INDEX idx_checkpoints_training_best ON checkpoints (training_id, is_best);
CREATE TABLE training_metrics (
    id SERIAL PRIMARY KEY,
    training_id VARCHAR(255) NOT NULL REFERENCES trainings(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    loss DOUBLE PRECISION NOT NULL,
    l0_sparsity DOUBLE PRECISION,
    timestamp TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE external_saes (
    id VARCHAR(255) PRIMARY KEY,
    training_id VARCHAR(255) REFERENCES trainings(id) ON DELETE SET NULL,
    name VARCHAR(500) NOT NULL
);
CREATE TABLE features (
    id VARCHAR(255) PRIMARY KEY,
    training_id VARCHAR(255) NOT NULL,
    neuron_index INTEGER NOT NULL
);
"""

TABLES = (
    "models",
    "activation_extractions",
    "trainings",
    "checkpoints",
    "training_metrics",
    "external_saes",
    "features",
)
DONE = "train_1a2b3c4d"  # a completed training: best at step 3000
LIVE = "train_5e6f7a8b"  # its status is the test's
GONE = "train_c0ffee00"  # its folder was removed by hand: rows only
LAYERS = (7, 14)
HOOK = "residual"
LOSSES = {1000: 0.9, 2000: 0.5, 3000: 0.2, 4000: 0.3, 5000: 0.25}


async def _connect(url: str) -> Any:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return await asyncpg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, database=u.database
    )


@dataclass
class MiDB:
    """miStudio's database, driven the way miStudio drives it."""

    url: str

    async def aexecute(self, sql: str, *args: object) -> list[Any]:
        con = await _connect(self.url)
        try:
            return list(await con.fetch(sql, *args))
        finally:
            await con.close()

    def execute(self, sql: str, *args: object) -> list[Any]:
        return asyncio.run(self.aexecute(sql, *args))

    def script(self, sql: str) -> None:
        """Several statements (DDL, grants), through the simple query protocol."""

        async def go() -> None:
            con = await _connect(self.url)
            try:
                await con.execute(sql)
            finally:
                await con.close()

        asyncio.run(go())

    def add_training(
        self,
        tid: str,
        status: str,
        losses: dict[int, float],
        layers: Sequence[int] = LAYERS,
        hook: str | None = HOOK,
    ) -> None:
        """A trainings row, then per step what miStudio's loop commits after saving the
        files: one row per layer, ``is_best`` moved to a step that beats the best so far."""

        async def go() -> None:
            con = await _connect(self.url)
            try:
                await con.execute(
                    "INSERT INTO models (id, name) VALUES ('m_gpt2', 'gpt2') ON CONFLICT DO NOTHING"
                )
                await con.execute(
                    "INSERT INTO trainings (id, model_id, dataset_id, status, progress, "
                    "current_step, total_steps, hyperparameters, checkpoint_dir) "
                    "VALUES ($1, 'm_gpt2', 'ds_1', $2, 50.0, $3, 10000, $4, $5)",
                    tid,
                    status,
                    max(losses, default=0),
                    json.dumps({"l1_alpha": 0.001, "training_layers": list(layers)}),
                    f"/data/trainings/{tid}/checkpoints",
                )
                best = float("inf")
                for step, avg in sorted(losses.items()):
                    async with con.transaction():
                        is_best = avg < best
                        if is_best:
                            best = avg
                            await con.execute(
                                "UPDATE checkpoints SET is_best = false "
                                "WHERE training_id = $1 AND is_best",
                                tid,
                            )
                        for i, layer in enumerate(layers):
                            await con.execute(
                                "INSERT INTO checkpoints (id, training_id, step, loss, "
                                "l0_sparsity, storage_path, file_size_bytes, is_best, "
                                "extra_metadata) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)",
                                f"ckpt_{uuid.uuid4().hex[:8]}",
                                tid,
                                step,
                                avg + 0.01 * (i - (len(layers) - 1) / 2),
                                0.05 + 0.01 * i,
                                f"/data/trainings/{tid}/checkpoints/checkpoint_{step}/"
                                f"layer_{layer}{'_' + hook if hook else ''}/"
                                "checkpoint.safetensors",
                                is_best,
                                json.dumps(
                                    {
                                        "layer_idx": layer,
                                        "hook_type": hook or "residual",
                                        "num_sae_models": len(layers),
                                        "training_layers": list(layers),
                                        "hook_types": [hook or "residual"],
                                        "avg_loss": avg,
                                        "avg_sparsity": 0.05,
                                    }
                                ),
                            )
                        await con.execute(
                            "INSERT INTO training_metrics (training_id, step, loss, l0_sparsity) "
                            "VALUES ($1, $2, $3, 0.05)",
                            tid,
                            step,
                            avg,
                        )
                await con.execute(
                    "INSERT INTO features (id, training_id, neuron_index) VALUES ($1, $2, 0)",
                    f"feat_{tid}",
                    tid,
                )
                await con.execute(
                    "INSERT INTO external_saes (id, training_id, name) VALUES ($1, $2, 'x')",
                    f"ext_{tid}",
                    tid,
                )
            finally:
                await con.close()

        asyncio.run(go())

    def steps(self, tid: str) -> dict[int, int]:
        """Rows per step of a training."""
        out: dict[int, int] = {}
        for r in self.execute("SELECT step FROM checkpoints WHERE training_id = $1", tid):
            out[r["step"]] = out.get(r["step"], 0) + 1
        return out

    def best(self, tid: str) -> set[int]:
        q = "SELECT DISTINCT step FROM checkpoints WHERE training_id = $1 AND is_best"
        return {r["step"] for r in self.execute(q, tid)}

    def dump(self, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table (or those named), in a stable order."""
        return {
            t: sorted(tuple(r) for r in self.execute(f"SELECT * FROM {t}"))
            for t in tables or TABLES
        }


@pytest.fixture
def mi() -> Iterator[MiDB]:
    with fresh_pg_db() as url:
        db = MiDB(url)
        db.script(SCHEMA)
        yield db


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "index.sqlite3")


def cli(*args: str, db: str, mi: MiDB | str | None = None) -> tuple[int, str, str]:
    extra = ["--db", db]
    if mi is not None:
        extra += ["--mistudio", mi.url if isinstance(mi, MiDB) else mi]
    result = CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def ok(*args: str, db: str, mi: MiDB | str | None = None) -> dict[str, Any]:
    code, out, err = cli(*args, "--json", db=db, mi=mi)
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def trainings_root(tmp_path: Path) -> Path:
    """The host side of docker-compose's ``./backend/data:/data`` mount."""
    return tmp_path / "backend" / "data" / "trainings"


def layer_dirs(layers: Sequence[int] = LAYERS) -> list[str]:
    return [f"layer_{n}_{HOOK}" for n in layers]


def on_disk(root: Path, tid: str) -> list[int]:
    ck = root / tid / "checkpoints"
    if not ck.exists():
        return []
    return sorted(int(p.name.split("_")[1]) for p in ck.iterdir())


def studio(tmp_path: Path, mi: MiDB, live_status: str | None = None) -> Path:
    """A completed training (best step 3000) and, with ``live_status``, a second one."""
    root = trainings_root(tmp_path)
    make_training(root, DONE, LOSSES, layer_dirs())
    mi.add_training(DONE, "completed", LOSSES)
    if live_status is not None:
        live = {100: 0.8, 200: 0.6, 300: 0.7}
        make_training(root, LIVE, live, layer_dirs())
        mi.add_training(LIVE, live_status, live)
    return root


def training(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (t,) = [t for t in doc["trainings"] if t["name"] == name]
    return t


def step_of(t: dict[str, Any], number: int) -> dict[str, Any]:
    (s,) = [s for s in t["steps"] if s["step"] == number]
    return s


# what it shows ---------------------------------------------------------------------------


def test_ls_shows_status_rows_best_and_means_per_step(tmp_path: Path, mi: MiDB, db: str) -> None:
    root = studio(tmp_path, mi, "running")
    doc = ok("ls", str(root), db=db, mi=mi)
    done, live = training(doc, DONE), training(doc, LIVE)
    assert done["mistudio"] == {"training_id": DONE, "status": "completed"}
    assert live["mistudio"] == {"training_id": LIVE, "status": "running"}
    assert done["stale_rows"] == live["stale_rows"] == 0
    best = step_of(done, 3000)["mistudio"]
    assert best["rows"] == 2 and best["is_best"] is True
    assert best["loss"] == pytest.approx(0.2) and best["l0_sparsity"] == pytest.approx(0.055)
    assert [s["mistudio"]["is_best"] for s in done["steps"]] == [False, False, True, False, False]
    assert "best in miStudio" in step_of(done, 3000)["protection"]
    assert all("active training: running" in s["protection"] for s in live["steps"])
    assert doc["mistudio"]["matched_trainings"] == 2 and doc["mistudio"]["stale_rows"] == 0
    # without --mistudio the keys are there, empty
    plain = ok("ls", str(root), db=db)
    assert training(plain, DONE)["mistudio"] is None and training(plain, DONE)["stale_rows"] is None
    assert step_of(training(plain, DONE), 3000)["mistudio"] is None
    assert plain["mistudio"] is None
    # the table says the same in words
    code, out, _ = cli("ls", str(root), db=db, mi=mi)
    assert code == 0
    assert "miStudio completed" in out and "miStudio running" in out
    assert "best in miStudio, loss 0.2" in out


def test_the_root_may_be_the_data_folder_or_one_training(tmp_path: Path, mi: MiDB, db: str) -> None:
    root = studio(tmp_path, mi)
    for where in (root.parent, root / DONE):
        doc = ok("ls", str(where), db=db, mi=mi)
        (t,) = doc["trainings"]
        assert t["mistudio"]["status"] == "completed"
        assert step_of(t, 3000)["mistudio"]["rows"] == 2


def test_a_plain_postgresql_url_and_the_environment_variable_work(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    root = studio(tmp_path, mi)
    plain = mi.url.replace("postgresql+asyncpg://", "postgresql://")
    assert training(ok("ls", str(root), db=db, mi=plain), DONE)["mistudio"]["status"] == (
        "completed"
    )
    result = CliRunner(env={"CKPT_TUI_MISTUDIO_URL": mi.url}).invoke(
        main, ["ls", str(root), "--json", "--db", db], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    assert training(json.loads(result.stdout), DONE)["mistudio"]["status"] == "completed"


# what it protects, and how it deletes ----------------------------------------------------


def test_prune_deletes_rows_with_their_files_and_keeps_the_best_step(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    root = studio(tmp_path, mi)
    others = mi.dump("trainings", "training_metrics", "features", "external_saes", "models")
    dry = ok("prune", str(root), "--keep", "1", "--dry-run", db=db, mi=mi)
    kept = {k["step"]: k["reasons"] for k in dry["keep"]}
    assert kept == {3000: ["best in miStudio"], 5000: ["newest"]}
    assert [d["step"] for d in dry["delete"]] == [1000, 2000, 4000]
    assert [d["mistudio_rows"] for d in dry["delete"]] == [2, 2, 2]
    assert dry["mistudio"]["rows"] == 6 and dry["mistudio"]["stale_rows"] == []
    done = ok("prune", str(root), "--keep", "1", "--yes", db=db, mi=mi)
    assert done["mistudio"]["rows_deleted"] == 6 and done["mistudio"]["rows_kept"] == 0
    assert done["mistudio"]["error"] is None
    # rows and files in step: exactly the kept steps, each with all its layers
    assert on_disk(root, DONE) == [3000, 5000]
    assert mi.steps(DONE) == {3000: 2, 5000: 2}
    assert mi.best(DONE) == {3000}
    assert mi.dump("trainings", "training_metrics", "features", "external_saes", "models") == (
        others
    ), "only checkpoint rows are ever deleted"
    doc = ok("ls", str(root), db=db, mi=mi)
    assert training(doc, DONE)["stale_rows"] == 0


@pytest.mark.parametrize("status", ["pending", "initializing", "running", "paused"])
def test_an_active_training_is_untouched(tmp_path: Path, mi: MiDB, db: str, status: str) -> None:
    root = studio(tmp_path, mi, status)
    before = mi.steps(LIVE)
    dry = ok("prune", str(root), "--keep", "1", "--dry-run", db=db, mi=mi)
    live = {k["step"]: k["reasons"] for k in dry["keep"] if k["training"] == LIVE}
    assert set(live) == {100, 200, 300}
    assert all(f"active training: {status}" in r for r in live.values())
    assert not [d for d in dry["delete"] if d["training"] == LIVE]
    ok("prune", str(root), "--keep", "1", "--yes", db=db, mi=mi)
    assert on_disk(root, LIVE) == [100, 200, 300] and mi.steps(LIVE) == before
    # rm names the reason and deletes nothing of it
    code, _, err = cli(
        "rm", str(root), str(root / LIVE / "checkpoints" / "checkpoint_100"), "--yes", db=db, mi=mi
    )
    assert code == 1 and f"active training: {status}; --force to include" in err
    assert on_disk(root, LIVE) == [100, 200, 300] and mi.steps(LIVE) == before


def test_force_lifts_the_active_and_best_protections(tmp_path: Path, mi: MiDB, db: str) -> None:
    root = studio(tmp_path, mi, "running")
    code, _, err = cli(
        "rm", str(root), str(root / DONE / "checkpoints" / "checkpoint_3000"), "--yes", db=db, mi=mi
    )
    assert code == 1 and "best in miStudio; --force to include" in err
    assert on_disk(root, DONE) == sorted(LOSSES)
    live_best = str(root / LIVE / "checkpoints" / "checkpoint_200")
    code, _, err = cli("rm", str(root), live_best, "--yes", db=db, mi=mi)
    assert code == 1 and "active training: running; best in miStudio; --force to include" in err
    done = ok("prune", str(root), "--keep", "1", "--force", "--yes", db=db, mi=mi)
    assert on_disk(root, DONE) == [5000] and mi.steps(DONE) == {5000: 2}
    assert on_disk(root, LIVE) == [300] and mi.steps(LIVE) == {300: 2}
    assert done["mistudio"]["rows_deleted"] == 4 * 2 + 2 * 2
    assert mi.execute("SELECT count(*) AS n FROM trainings")[0]["n"] == 2


def test_a_failed_unlink_keeps_every_row_of_its_step(
    tmp_path: Path, mi: MiDB, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = studio(tmp_path, mi)
    real = fs.os.unlink

    def unlink(name: str, *, dir_fd: int | None = None) -> None:
        # Patched: root ignores permission bits, so the OS call fails here as it would for
        # a user without write access to checkpoint_2000/layer_14_residual.
        if dir_fd is not None and os.readlink(f"/proc/self/fd/{dir_fd}").endswith(
            ("checkpoint_2000/layer_14_residual", "checkpoint_4000/layer_14_residual")
        ):
            raise PermissionError(errno.EACCES, "Permission denied", name)
        real(name, dir_fd=dir_fd)

    monkeypatch.setattr(fs.os, "unlink", unlink)
    code, out, _ = cli("prune", str(root), "--keep", "1", "--yes", "--json", db=db, mi=mi)
    monkeypatch.undo()
    assert code == 1
    result = json.loads(out)
    failed = sorted(f["path"] for f in result["failed"])
    assert [p.split("/checkpoints/")[1] for p in failed] == [
        f"checkpoint_{n}/layer_14_residual/checkpoint.safetensors" for n in (2000, 4000)
    ]
    assert result["mistudio"]["rows_deleted"] == 2 and result["mistudio"]["rows_kept"] == 4
    # both rows of steps 2000 and 4000 stay, though one of their two files is gone
    assert mi.steps(DONE) == {2000: 2, 3000: 2, 4000: 2, 5000: 2}
    ck = root / DONE / "checkpoints" / "checkpoint_2000"
    assert not (ck / "layer_7_residual").exists() and (ck / "layer_14_residual").is_dir()
    doc = ok("ls", str(root), db=db, mi=mi)
    assert training(doc, DONE)["stale_rows"] == 2  # the layer_7 rows now name nothing


def test_rows_go_batch_by_batch_and_a_step_without_rows_does_not_stop_them(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    """A prune of 45 steps of 2 files runs in two batches (64 files, then the rest): the
    rows of both go and are counted together, a step folder miStudio never recorded (the
    first deleted) does not stop the rows of the steps after it, and nothing is left
    pending for a next run."""
    root = trainings_root(tmp_path)
    losses = {1000 * n: 1.0 / n for n in range(1, 46)}
    make_training(root, DONE, [*losses, 500], layer_dirs())
    mi.add_training(DONE, "completed", losses)
    done = ok("prune", str(root), "--keep", "1", "--force", "--yes", db=db, mi=mi)
    assert len(done["deleted"]) == 2 * 45 and done["mistudio"]["rows_deleted"] == 2 * 44
    assert mi.steps(DONE) == {45000: 2}
    pending = sqlite3.connect(db).execute("SELECT key FROM meta WHERE key LIKE 'mistudio%'")
    assert pending.fetchall() == []
    code, _, err = cli("ls", str(root), db=db, mi=mi)
    assert code == 0 and "miStudio rows" not in err


def test_stale_rows_are_listed_and_go_only_with_stale_records(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    root = studio(tmp_path, mi)
    mi.add_training(GONE, "completed", {10: 0.5, 20: 0.4})  # its folder was removed by hand
    shutil.rmtree(root / DONE / "checkpoints" / "checkpoint_1000")  # an older tool's work
    doc = ok("ls", str(root), db=db, mi=mi)
    assert training(doc, DONE)["stale_rows"] == 2
    gone = training(doc, GONE)
    assert gone["steps"] == [] and gone["stale_rows"] == 4
    assert gone["mistudio"]["status"] == "completed" and gone["path"] == str(root / GONE)
    assert doc["mistudio"]["stale_rows"] == 6
    code, out, _ = cli("ls", str(root), db=db, mi=mi)
    assert code == 0
    assert "6 stale rows" in out and f"{GONE}: miStudio completed, no folder left" in out
    # without --stale-records they stay (the plan says so)
    dry = ok("prune", str(root), "--keep", "1", "--dry-run", db=db, mi=mi)
    assert dry["mistudio"]["stale_rows"] == [] and dry["mistudio"]["stale_kept"] == 6
    ok("prune", str(root), "--keep", "1", "--yes", db=db, mi=mi)
    assert mi.steps(DONE) == {1000: 2, 3000: 2, 5000: 2} and mi.steps(GONE) == {10: 2, 20: 2}
    # the dry run lists them first, then --stale-records deletes exactly those
    dry = ok("prune", str(root), "--keep", "1", "--dry-run", "--stale-records", db=db, mi=mi)
    listed = {(r["training_id"], r["step"]) for r in dry["mistudio"]["stale_rows"]}
    assert listed == {(DONE, 1000), (GONE, 10), (GONE, 20)}
    assert len(dry["mistudio"]["stale_rows"]) == 6
    stored = [r["storage_path"] for r in dry["mistudio"]["stale_rows"]]
    assert all(p.startswith("/data/trainings/") for p in stored)
    assert {r["path"] for r in dry["mistudio"]["stale_rows"] if r["step"] == 10} == {
        str(root / GONE / "checkpoints" / "checkpoint_10" / d / "checkpoint.safetensors")
        for d in layer_dirs()
    }
    done = ok("prune", str(root), "--keep", "1", "--yes", "--stale-records", db=db, mi=mi)
    assert done["mistudio"]["stale_deleted"] == 6
    assert mi.steps(DONE) == {3000: 2, 5000: 2} and mi.steps(GONE) == {}
    assert mi.execute("SELECT id FROM trainings WHERE id = $1", GONE), "trainings rows stay"
    assert mi.execute("SELECT * FROM training_metrics WHERE training_id = $1", GONE)
    doc = ok("ls", str(root), db=db, mi=mi)
    assert doc["mistudio"]["stale_rows"] == 0 and [t["name"] for t in doc["trainings"]] == [DONE]


def test_stale_rows_of_an_active_training_need_force_a_stale_best_row_does_not(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    root = studio(tmp_path, mi, "paused")
    shutil.rmtree(root / DONE / "checkpoints" / "checkpoint_3000")  # the best step, by hand
    shutil.rmtree(root / LIVE / "checkpoints" / "checkpoint_100")
    dry = ok("prune", str(root), "--keep", "1", "--dry-run", "--stale-records", db=db, mi=mi)
    # the best row names nothing any more: it goes (shown as best); the paused one's stay
    assert {(r["step"], r["is_best"]) for r in dry["mistudio"]["stale_rows"]} == {(3000, True)}
    reasons = [p["reason"] for p in dry["protected"] if "stale miStudio row" in p["reason"]]
    assert len(reasons) == 2
    assert all("active training: paused; --force to include" in r for r in reasons)
    kept = {p["path"] for p in dry["protected"] if "stale miStudio row" in p["reason"]}
    assert kept == {
        str(root / LIVE / "checkpoints" / "checkpoint_100" / d / "checkpoint.safetensors")
        for d in layer_dirs()
    }, "each kept row names the file it stood for"
    ok("prune", str(root), "--keep", "1", "--yes", "--stale-records", db=db, mi=mi)
    assert mi.steps(DONE) == {5000: 2} and mi.best(DONE) == set()
    assert mi.steps(LIVE) == {100: 2, 200: 2, 300: 2}
    ok("prune", str(root), "--keep", "1", "--yes", "--stale-records", "--force", db=db, mi=mi)
    assert mi.steps(LIVE) == {300: 2}, "--force: the stale rows and the older steps went"


def test_rm_stale_records_of_the_targets_training_only(tmp_path: Path, mi: MiDB, db: str) -> None:
    root = studio(tmp_path, mi, "completed")
    shutil.rmtree(root / DONE / "checkpoints" / "checkpoint_1000")
    shutil.rmtree(root / LIVE / "checkpoints" / "checkpoint_100")
    target = str(root / DONE / "checkpoints" / "checkpoint_2000")
    done = ok("rm", str(root), target, "--yes", "--stale-records", db=db, mi=mi)
    assert done["mistudio"]["rows_deleted"] == 2 and done["mistudio"]["stale_deleted"] == 2
    assert mi.steps(DONE) == {3000: 2, 4000: 2, 5000: 2}
    assert mi.steps(LIVE) == {100: 2, 200: 2, 300: 2}, "another training's stale rows stay"


def test_a_plan_for_one_training_counts_and_deletes_only_its_own_stale_rows(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    root = studio(tmp_path, mi, "completed")
    shutil.rmtree(root / DONE / "checkpoints" / "checkpoint_1000")  # 2 stale rows of DONE
    shutil.rmtree(root / LIVE / "checkpoints" / "checkpoint_100")  # 2 stale rows of LIVE
    one = ("prune", str(root), "--training", DONE, "--keep", "1", "--dry-run")
    dry = ok(*one, db=db, mi=mi)
    assert dry["mistudio"]["stale_rows"] == [] and dry["mistudio"]["stale_kept"] == 2
    dry = ok(*one, "--stale-records", db=db, mi=mi)
    listed = [(r["training_id"], r["step"]) for r in dry["mistudio"]["stale_rows"]]
    assert listed == [(DONE, 1000)] * 2 and dry["mistudio"]["stale_kept"] == 0
    # rm without --stale-records: the target's training's stale rows are counted, never listed
    target = str(root / DONE / "checkpoints" / "checkpoint_2000")
    dry = ok("rm", str(root), target, "--dry-run", db=db, mi=mi)
    assert dry["mistudio"]["stale_rows"] == [] and dry["mistudio"]["stale_kept"] == 2
    done = ok("rm", str(root), target, "--yes", db=db, mi=mi)
    assert done["mistudio"]["rows_deleted"] == 2 and done["mistudio"]["stale_deleted"] == 0
    assert mi.steps(DONE) == {1000: 2, 3000: 2, 4000: 2, 5000: 2}, "its stale rows stay"
    assert mi.steps(LIVE) == {100: 2, 200: 2, 300: 2}


def test_rows_of_a_planned_step_removed_by_hand_go_with_it_and_other_stale_rows_still_count(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    root = studio(tmp_path, mi)
    mi.add_training(GONE, "completed", {10: 0.5, 20: 0.4})  # its folder was removed by hand
    ok("scan", str(root), db=db)
    shutil.rmtree(root / DONE / "checkpoints" / "checkpoint_1000")  # since the scan
    dry = ok("prune", str(root), "--keep", "1", "--dry-run", db=db, mi=mi)
    assert dry["mistudio"]["rows"] == 3 * 2, "1000, 2000 and 4000 go with their rows"
    assert dry["mistudio"]["stale_kept"] == 4, "the GONE training's rows, not step 1000's"
    dry = ok("prune", str(root), "--keep", "1", "--dry-run", "--stale-records", db=db, mi=mi)
    listed = sorted((r["training_id"], r["step"]) for r in dry["mistudio"]["stale_rows"])
    assert listed == [(GONE, 10), (GONE, 10), (GONE, 20), (GONE, 20)]


def test_orphan_step_folders_are_shown_and_deletable(tmp_path: Path, mi: MiDB, db: str) -> None:
    root = studio(tmp_path, mi)
    make_training(root, DONE, [1500], layer_dirs())  # on disk, never recorded by miStudio
    rows = mi.dump("checkpoints")
    doc = ok("ls", str(root), db=db, mi=mi)
    orphan = step_of(training(doc, DONE), 1500)["mistudio"]
    assert orphan == {"rows": 0, "is_best": False, "loss": None, "l0_sparsity": None}
    assert doc["mistudio"]["orphan_steps"] == 1
    code, out, _ = cli("ls", str(root), db=db, mi=mi)
    assert code == 0
    assert "no miStudio record" in out and "1 step folders with no miStudio record" in out
    target = str(root / DONE / "checkpoints" / "checkpoint_1500")
    dry = ok("rm", str(root), target, "--dry-run", db=db, mi=mi)
    assert [d["mistudio_rows"] for d in dry["delete"]] == [0]
    done = ok("rm", str(root), target, "--yes", db=db, mi=mi)
    assert done["mistudio"]["rows_deleted"] == 0 and not Path(target).exists()
    assert mi.dump("checkpoints") == rows


def test_best_loss_ranks_by_mistudio_loss(tmp_path: Path, mi: MiDB, db: str) -> None:
    root = studio(tmp_path, mi)
    # the files carry avg_loss, not loss: miStudio's mean loss per step ranks them
    # (3000: 0.2, 5000: 0.25, 4000: 0.3); --force so "best in miStudio" is not a reason
    args = ("prune", str(root), "--keep", "1", "--best", "loss:min", "--best-n", "2")
    dry = ok(*args, "--force", "--dry-run", db=db, mi=mi)
    kept = {k["step"]: k["reasons"] for k in dry["keep"]}
    assert kept == {3000: ["best loss"], 5000: ["newest", "best loss"]}
    assert [d["step"] for d in dry["delete"]] == [1000, 2000, 4000]
    # without miStudio nothing carries "loss": every step is kept, not guessed
    plain = ok(*args, "--dry-run", db=db)
    assert plain["delete"] == []


def own_metric_training(root: Path, name: str, losses: dict[int, float]) -> None:
    """A training miStudio never recorded whose files carry ``loss`` themselves."""
    for step, loss in losses.items():
        path = make_training(root, name, [step], layer_dirs()[:1]) / f"checkpoint_{step}"
        (layer,) = path.iterdir()
        tensors = {"W_enc": np.ones((8, 32), dtype=np.float32)}
        save_file(tensors, str(layer / "checkpoint.safetensors"), {"loss": str(loss)})
        os.utime(layer / "checkpoint.safetensors", (OLD, OLD))


def test_best_loss_ranks_each_training_by_its_own_source(tmp_path: Path, mi: MiDB, db: str) -> None:
    """Trainings whose files carry the key rank by it, whichever side of the miStudio one
    they are listed; the miStudio training ranks by its rows, and a step folder miStudio
    never recorded (500, the first) is kept unknown without stopping the ranking, as is a
    training neither miStudio nor its files give a loss."""
    root = studio(tmp_path, mi)
    make_training(root, DONE, [500], layer_dirs())  # on disk only
    make_training(root, "m_plain", [1, 2], layer_dirs())  # avg_loss only, no miStudio rows
    own = {1: 0.3, 2: 0.1, 3: 0.2}
    own_metric_training(root, "a_own", own)
    own_metric_training(root, "z_own", own)
    args = ("prune", str(root), "--keep", "1", "--best", "loss:min", "--force", "--dry-run")
    dry = ok(*args, db=db, mi=mi)
    deleted: dict[str, set[int]] = {}
    for d in dry["delete"]:
        deleted.setdefault(Path(d["path"]).parts[-3], set()).add(d["step"])
    assert deleted == {DONE: {1000, 2000, 4000}, "a_own": {1}, "z_own": {1}}
    kept = {(Path(k["path"]).parts[-3], k["step"]): k["reasons"] for k in dry["keep"]}
    assert kept[(DONE, 500)] == ["no loss: kept, not guessed"]
    assert kept[("m_plain", 1)] == ["no loss: kept, not guessed"]
    assert kept[(DONE, 3000)] == ["best loss"] and kept[("a_own", 2)] == ["best loss"]


def test_best_l0_sparsity_ranks_by_mistudio_l0(tmp_path: Path, mi: MiDB, db: str) -> None:
    """``--best l0_sparsity`` reads miStudio's mean l0 per step, not its loss (which would
    pick 3000)."""
    root = studio(tmp_path, mi)
    l0 = {1000: 0.01, 2000: 0.09, 3000: 0.08, 4000: 0.07, 5000: 0.06}
    for step, value in l0.items():
        mi.execute(
            "UPDATE checkpoints SET l0_sparsity = $1 WHERE training_id = $2 AND step = $3",
            value,
            DONE,
            step,
        )
    args = ("prune", str(root), "--keep", "1", "--best", "l0_sparsity:min", "--force")
    dry = ok(*args, "--dry-run", db=db, mi=mi)
    assert {k["step"]: k["reasons"] for k in dry["keep"]} == {
        1000: ["best l0_sparsity"],
        5000: ["newest"],
    }
    assert [d["step"] for d in dry["delete"]] == [2000, 3000, 4000]


# refusals: one line, exit 1, nothing deleted ---------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there


def snapshot_disk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_an_unreachable_database_deletes_nothing(tmp_path: Path, db: str) -> None:
    root = trainings_root(tmp_path)
    make_training(root, DONE, LOSSES, layer_dirs())
    before = snapshot_disk(root)
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/mistudio"
    for args in (
        ("prune", str(root), "--keep", "1", "--yes"),
        ("rm", str(root), str(root / DONE), "--yes", "--force"),
        ("ls", str(root)),
        ("scan", str(root)),
    ):
        code, out, err = cli(*args, db=db, mi=url)
        assert code == 1, (args, out, err)
        (line,) = err.strip().splitlines()
        assert "miStudio database postgres@127.0.0.1" in line and "unreachable" in line
        assert "Traceback" not in err
    assert snapshot_disk(root) == before


def test_a_database_without_the_schema_deletes_nothing(tmp_path: Path, db: str) -> None:
    root = trainings_root(tmp_path)
    make_training(root, DONE, LOSSES, layer_dirs())
    before = snapshot_disk(root)
    with fresh_pg_db() as url:
        code, _, err = cli("prune", str(root), "--keep", "1", "--yes", db=db, mi=url)
    assert code == 1
    (line,) = err.strip().splitlines()
    assert "does not have miStudio's schema: no table 'trainings'" in line
    assert snapshot_disk(root) == before


def test_bad_values_are_one_line(tmp_path: Path, db: str) -> None:
    root = trainings_root(tmp_path)
    make_training(root, DONE, [1, 2], layer_dirs())
    for args, words in (
        (("--mistudio", "sqlite:///x.db"), "needs miStudio's PostgreSQL URL"),
        (("--mistudio", "::not a url::"), "is not a database URL"),
        (("--stale-records",), "--stale-records needs --mistudio"),
    ):
        code, _, err = cli("prune", str(root), "--keep", "1", "--yes", *args, db=db)
        assert code == 1 and words in err and len(err.strip().splitlines()) == 1
    assert on_disk(root, DONE) == [1, 2]


@pytest.fixture
def read_only_url(mi: MiDB) -> Iterator[str]:
    """The same database through a role that may read but not delete."""
    role = f"ckpt_ro_{uuid.uuid4().hex[:8]}"
    name = mi.url.rsplit("/", 1)[1]
    asyncio.run(_pg_admin(f"CREATE ROLE {role} LOGIN"))
    try:
        mi.script(
            f"GRANT CONNECT ON DATABASE {name} TO {role}; GRANT USAGE ON SCHEMA public TO {role};"
            f" GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
        )
        yield mi.url.replace("//postgres@", f"//{role}@")
        mi.script(
            f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role};"
            f" REVOKE ALL ON SCHEMA public FROM {role}; REVOKE ALL ON DATABASE {name} FROM {role}"
        )
    finally:
        asyncio.run(_pg_admin(f"DROP ROLE IF EXISTS {role}"))


def test_no_delete_permission_deletes_nothing(
    tmp_path: Path, mi: MiDB, db: str, read_only_url: str
) -> None:
    root = studio(tmp_path, mi)
    rows = mi.dump("checkpoints")
    dry = ok("prune", str(root), "--keep", "1", "--dry-run", db=db, mi=read_only_url)
    assert len(dry["delete"]) == 3, "a role that only reads can still plan"
    code, out, err = cli("prune", str(root), "--keep", "1", "--yes", db=db, mi=read_only_url)
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert "permission denied" in line and "may not DELETE from checkpoints" in line
    assert on_disk(root, DONE) == sorted(LOSSES) and mi.dump("checkpoints") == rows


def index_dump(db: str) -> list[str]:
    with sqlite3.connect(db) as con:
        return list(con.iterdump())


def test_a_dry_run_changes_nothing_in_either_database(tmp_path: Path, mi: MiDB, db: str) -> None:
    root = studio(tmp_path, mi, "running")
    mi.add_training(GONE, "completed", {10: 0.5})
    shutil.rmtree(root / DONE / "checkpoints" / "checkpoint_1000")
    assert cli("scan", str(root), db=db, mi=mi)[0] == 0
    rows, index, disk = mi.dump(), index_dump(db), snapshot_disk(root)
    for args in (
        ("prune", str(root), "--keep", "1", "--stale-records", "--force"),
        ("rm", str(root), str(root / DONE), "--stale-records", "--force"),
    ):
        dry = ok(*args, "--dry-run", db=db, mi=mi)
        assert dry["delete"] and dry["mistudio"]["rows"] and dry["mistudio"]["stale_rows"]
    assert cli("ls", str(root), db=db, mi=mi)[0] == 0
    assert mi.dump() == rows and index_dump(db) == index and snapshot_disk(root) == disk


# crash safety ----------------------------------------------------------------------------


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing after it runs in the deleter."""


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The index on both backends: the miStudio intent lives in it."""
    if request.param == "sqlite":
        yield str(tmp_path / "index.sqlite3")
        return
    with fresh_pg_db() as url:
        yield url


@pytest.mark.parametrize("where", ["after the index transaction", "before it"])
def test_a_kill_between_the_unlinks_and_the_row_delete_is_repaired_by_the_next_deletion(
    tmp_path: Path, mi: MiDB, index: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = studio(tmp_path, mi)

    async def die(*_a: object, **_k: object) -> None:
        raise Killed

    async def killed_run() -> None:
        async with await CheckpointService.open(
            index, protection=Protection(recent_seconds=0), mistudio=mi.url
        ) as svc:
            info = await svc.indexed_root(str(root))
            plan = await svc.plan_retention(info.id, 1)
            assert plan.mistudio is not None and len(plan.mistudio.rows) == 6
            if where == "before it":
                monkeypatch.setattr(Deleter, "_finish", die)  # files gone, index not told
            else:
                monkeypatch.setattr(MiStudio, "delete_rows", die)  # index told, miStudio not
            with pytest.raises(Killed):
                await svc.execute(plan)
            monkeypatch.undo()

    asyncio.run(killed_run())
    assert on_disk(root, DONE) == [3000, 5000], "the files went"
    assert mi.steps(DONE) == {1000: 2, 2000: 2, 3000: 2, 4000: 2, 5000: 2}, "the rows did not"
    # read-only commands report it and leave it
    for args in (("ls", str(root)), ("scan", str(root))):
        code, out, err = cli(*args, "--json", db=index, mi=mi)
        assert code == 0
        assert "an interrupted deletion left 6 miStudio rows of 3 deleted steps" in err
    doc = json.loads(cli("ls", str(root), "--json", db=index, mi=mi)[1])
    assert doc["mistudio"]["pending_rows"] == 6 and training(doc, DONE)["stale_rows"] == 6
    dry = ok("prune", str(root), "--keep", "1", "--dry-run", db=index, mi=mi)
    assert mi.steps(DONE)[1000] == 2 and dry["delete"] == []
    # ... even without --mistudio (the intent is in the index)
    code, _, err = cli("ls", str(root), db=index)
    assert code == 0 and "left 6 miStudio rows" in err
    # the next deleting run (nothing new to delete) removes them first, and says so
    code, out, err = cli("prune", str(root), "--keep", "1", "--yes", "--json", db=index, mi=mi)
    assert code == 0, err
    assert "deleting them first" in err
    assert json.loads(out)["mistudio"]["repaired"] == 6
    assert mi.steps(DONE) == {3000: 2, 5000: 2}
    code, _, err = cli("ls", str(root), db=index, mi=mi)
    assert code == 0 and "interrupted" not in err


async def test_a_step_that_became_best_since_the_plan_is_left_alone(
    tmp_path: Path, mi: MiDB, db: str
) -> None:
    root = trainings_root(tmp_path)
    make_training(root, DONE, LOSSES, layer_dirs())
    await asyncio.to_thread(mi.add_training, DONE, "completed", LOSSES)
    async with await CheckpointService.open(
        db, protection=Protection(recent_seconds=0), mistudio=mi.url
    ) as svc:
        info = await svc.indexed_root(str(root))
        plan = await svc.plan_retention(info.id, 1)
        assert [s.step for s in plan.steps] == [1000, 2000, 4000]
        # miStudio moves "best" to step 1000 after the plan was made
        await mi.aexecute("UPDATE checkpoints SET is_best = (step = 1000)")
        result = await svc.execute(plan)
    assert result.mistudio is not None and result.mistudio.rows_deleted == 4
    skipped = {r.path for r in result.results if r.error and "best in miStudio" in r.error}
    assert len(skipped) == 2 and all("checkpoint_1000" in p for p in skipped)
    assert on_disk(root, DONE) == [1000, 3000, 5000]
    assert (await asyncio.to_thread(mi.steps, DONE)) == {1000: 2, 3000: 2, 5000: 2}


def test_a_database_failure_after_the_unlinks_stops_the_run_and_is_repaired(
    tmp_path: Path, mi: MiDB, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckpt_tui.mistudio import MiStudioError

    root = studio(tmp_path, mi)

    async def lost(*_a: object, **_k: object) -> int:
        raise MiStudioError("miStudio database x is unreachable: connection lost")

    monkeypatch.setattr(MiStudio, "delete_rows", lost)
    code, out, err = cli("prune", str(root), "--keep", "1", "--yes", "--json", db=db, mi=mi)
    monkeypatch.undo()
    assert code == 1
    result = json.loads(out)
    assert "connection lost" in result["stopped"] and "the next deleting run" in result["stopped"]
    assert result["mistudio"]["error"] == "miStudio database x is unreachable: connection lost"
    assert result["mistudio"]["rows_deleted"] == 0
    assert on_disk(root, DONE) == [3000, 5000] and mi.steps(DONE)[1000] == 2
    code, _, err = cli("ls", str(root), db=db, mi=mi)
    assert code == 0 and "left 6 miStudio rows" in err
    done = ok("prune", str(root), "--keep", "1", "--yes", db=db, mi=mi)
    assert done["mistudio"]["repaired"] == 6 and mi.steps(DONE) == {3000: 2, 5000: 2}


def test_a_database_failure_deleting_stale_rows_is_reported_and_they_stay(
    tmp_path: Path, mi: MiDB, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckpt_tui.mistudio import MiStudioError

    root = studio(tmp_path, mi)
    mi.add_training(GONE, "completed", {10: 0.5})  # its folder was removed by hand
    calls: list[int] = []
    real = MiStudio.delete_rows

    async def lost_on_stale(self: MiStudio, pairs: Any, *a: object, **k: object) -> int:
        calls.append(len(pairs))
        if any(GONE in path for _id, path in pairs):
            raise MiStudioError("miStudio database x is unreachable: connection lost")
        return await real(self, pairs, *a, **k)

    monkeypatch.setattr(MiStudio, "delete_rows", lost_on_stale)
    args = ("prune", str(root), "--keep", "1", "--stale-records", "--yes", "--json")
    code, out, _ = cli(*args, db=db, mi=mi)
    monkeypatch.undo()
    result = json.loads(out)
    assert code == 1 and calls, "the stale rows were attempted"
    assert result["stopped"] == (
        "miStudio database x is unreachable: connection lost; "
        "the stale miStudio rows were not deleted"
    )
    assert result["mistudio"]["error"] == "miStudio database x is unreachable: connection lost"
    assert result["mistudio"]["stale_deleted"] == 0 and mi.steps(GONE) == {10: 2}
    assert on_disk(root, DONE) == [3000, 5000] and mi.steps(DONE) == {3000: 2, 5000: 2}


def test_without_mistudio_nothing_of_it_is_imported(tmp_path: Path) -> None:
    from tests.test_cli_imports import imported, offenders

    root = trainings_root(tmp_path)
    make_training(root, DONE, [1, 2], layer_dirs())
    for command in ("ls", "scan"):
        names = imported(command, str(root), "--db", str(tmp_path / "index.sqlite3"))
        assert offenders(names, ("ckpt_tui.mistudio", "asyncpg")) == [], command

"""Shared fixtures: real checkpoint trees written with the safetensors library, real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from safetensors.numpy import save_file

from ckpt_tui.planning import Protection
from ckpt_tui.service import CheckpointService

OLD = time.time() - 86_400  # files a day old: outside the live-writer window

# Hypothesis: a fixed, derandomized profile in CI (``.ci/run`` sets CI=true), so a run is
# reproducible and a red CI is a real failure, never a new random draw; locally the default
# random exploration, with the example database so a failure found once is replayed first.
# HYPOTHESIS_PROFILE=ci reproduces CI's draws on a developer machine.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


def write_checkpoint(
    path: Path, step: int, layer: int | None = None, *, mtime: float = OLD
) -> Path:
    """A small real safetensors file with the miStudio ``__metadata__``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(step * 100 + (layer or 0))
    tensors = {
        "W_enc": rng.standard_normal((8, 32)).astype(np.float32),
        "W_dec": rng.standard_normal((32, 8)).astype(np.float32),
        "b_enc": np.zeros(32, dtype=np.float32),
    }
    meta = {"step": str(step), "avg_loss": f"{1 / (1 + step):.6f}"}
    if layer is not None:
        meta["layer_idx"] = str(layer)
    save_file(tensors, str(path), metadata=meta)
    os.utime(path, (mtime, mtime))
    return path


def make_training(
    root: Path,
    name: str,
    steps: Iterable[int],
    layers: Iterable[str] = ("layer_7", "layer_14", "layer_18"),
    *,
    checkpoints_dir: bool = True,
) -> Path:
    """``root/name/checkpoints/checkpoint_<step>/<layer>/checkpoint.safetensors``."""
    base = root / name / "checkpoints" if checkpoints_dir else root / name
    layer_names = list(layers)
    for step in steps:
        for i, layer in enumerate(layer_names):
            write_checkpoint(
                base / f"checkpoint_{step}" / layer / "checkpoint.safetensors", step, i
            )
    return base


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Two trainings: a 3-layer one with 4 steps and a single-layer one with 3 steps."""
    root = tmp_path / "root"
    make_training(root, "train_a", [900, 10000, 2000, 30000])
    base = root / "train_b"
    for step in (100, 200, 300):
        write_checkpoint(base / f"checkpoint_{step}" / "sae.safetensors", step)
    return root


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """An SQLite index file (modules that run on every backend override this with any_db)."""
    return str(tmp_path / "index.sqlite3")


PG_URL = os.environ.get("CKPT_TUI_TEST_PG_URL")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


async def _pg_admin(sql: str) -> None:
    import asyncpg  # only needed when CKPT_TUI_TEST_PG_URL is set
    from sqlalchemy.engine import make_url

    assert PG_URL is not None
    url = make_url(PG_URL)
    con = await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await con.execute(sql)
    finally:
        await con.close()


@contextlib.contextmanager
def fresh_pg_db() -> Iterator[str]:
    """A new, empty PostgreSQL database on the CKPT_TUI_TEST_PG_URL server, dropped after."""
    from sqlalchemy.engine import make_url

    if PG_URL is None:
        if os.environ.get("CI"):
            pytest.fail("CI must set CKPT_TUI_TEST_PG_URL (.ci/run starts PostgreSQL)")
        pytest.skip("needs CKPT_TUI_TEST_PG_URL")
    name = f"ckpt_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f"CREATE DATABASE {name}"))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=BACKENDS)
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty index on each backend: an SQLite file, and a fresh PostgreSQL database when
    CKPT_TUI_TEST_PG_URL names a server (CI starts one)."""
    if request.param == "sqlite":
        yield str(tmp_path / "index.sqlite3")
        return
    with fresh_pg_db() as url:
        yield url


@pytest.fixture
def pg_db() -> Iterator[str]:
    with fresh_pg_db() as url:
        yield url


@pytest.fixture
async def svc(db_path: str) -> AsyncIterator[CheckpointService]:
    service = await CheckpointService.open(db_path)
    yield service
    await service.close()


@pytest.fixture
async def svc_unprotected(db_path: str) -> AsyncIterator[CheckpointService]:
    """A service without live-writer protection, to exercise deletion of any step."""
    service = await CheckpointService.open(
        db_path, protection=Protection(newest_step=False, recent_seconds=0)
    )
    yield service
    await service.close()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def empty_dirs(root: Path) -> list[Path]:
    return [
        p for p in root.rglob("*") if p.is_dir() and not p.is_symlink() and not any(p.iterdir())
    ]

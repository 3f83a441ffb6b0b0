"""Fixtures for the TUI tests: a real demo tree, a real SQLite index, the real app."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.worker import WorkerCancelled

from ckpt_tui.demo import DemoTree, build_demo, sae_tensors, write_sparse_safetensors
from ckpt_tui.planning import Protection
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.app import CkptApp
from ckpt_tui.types import DiskUsage

SIZE = (120, 36)
FIXED_NOW = 1_718_000_000.0  # 2024-06-10: snapshots need ages that never change
DISPLAY_ROOT = "/data/trainings"


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Times in the details panel are local: pin the zone so snapshots match anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
def demo(tmp_path: Path) -> DemoTree:
    return build_demo(tmp_path / "demo", scale=0.1)


@pytest.fixture
async def service(demo: DemoTree) -> AsyncIterator[CheckpointService]:
    """A service on the demo index, already scanned, newest-step protection on (the default)."""
    svc = await CheckpointService.open(str(demo.db_path))
    await svc.scan(str(demo.root))
    yield svc
    await svc.close()


def _busy(app: CkptApp) -> bool:
    return any(w.is_running or w.state.name == "PENDING" for w in app.workers)


async def settle(app: CkptApp, pilot: Any, timeout: float = 30.0) -> None:
    """Wait, with a deadline, until no worker of the app is pending or running across a
    processed message round (a worker's result can start another), and its repaint is done."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for the app to settle")
        await pilot.pause()
        if _busy(app):
            quiet = 0
            try:
                await app.workers.wait_for_complete()
            except WorkerCancelled:
                continue  # an exclusive worker was replaced by a newer one: wait for that one
        else:
            quiet += 1


async def until(
    pilot: Any, condition: Callable[[], bool], what: str, timeout: float = 30.0
) -> None:
    """Let the app run until ``condition()`` holds (polling, with a deadline): never a
    fixed number of pauses, which a loaded machine outruns."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.01)
    await pilot.pause()  # and the repaint that the change asked for


def screen_lines(app: CkptApp) -> list[str]:
    """The screen as the user sees it, one string per terminal line."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def screen_text(app: CkptApp) -> str:
    return "\n".join(screen_lines(app))


def row_names(app: CkptApp) -> list[str]:
    return [n.name for n in app.model.rows]


async def goto(app: CkptApp, pilot: Any, name: str) -> None:
    """Move the cursor with the keyboard until it is on the row called ``name``."""
    target = row_names(app).index(name)
    while app.ckpt_tree.cursor != target:
        await pilot.press("down" if app.ckpt_tree.cursor < target else "up")
    await settle(app, pilot)


async def open_rows(app: CkptApp, pilot: Any, *names: str) -> None:
    """Once the app settled, expand the rows called ``names`` in turn (each loads first)."""
    await settle(app, pilot)
    for name in names:
        await goto(app, pilot, name)
        await pilot.press("right")
        await settle(app, pilot)


async def mark_and_confirm(app: CkptApp, pilot: Any, *names: str) -> None:
    """Open the rows ``names[:-1]`` in turn, mark ``names[-1]`` with Space, press d and wait
    for the confirm dialog's checked plan."""
    from ckpt_tui.tui.screens.confirm import ConfirmScreen  # as the app does: on first use

    await open_rows(app, pilot, *names[:-1])
    await goto(app, pilot, names[-1])
    await pilot.press("space", "d")
    await until(
        pilot, lambda: isinstance(app.screen, ConfirmScreen) and not app.screen.pending, "plan"
    )


def make_app(demo: DemoTree, service: CheckpointService | None = None, **kw: Any) -> CkptApp:
    return CkptApp(str(demo.root), str(demo.db_path), service=service, **kw)


def fake_disk(
    free: int = 123_000_000_000, total: int = 250_000_000_000
) -> Callable[[str], DiskUsage]:
    def usage(_root: str) -> DiskUsage:
        return DiskUsage(total=total, used=total - free, free=free)

    return usage


CJK_TRAINING = "训练_中文模型_l12"
LONG_TRAINING = "sweep_long_run"
LONG_STEPS = 60


def build_fixed_tree(base: Path) -> Path:
    """A small tree with fixed mtimes (for snapshots): a miStudio training with one incomplete
    step, a single-layer one, one with a CJK name, and one of 60 small steps."""
    root = base / "trainings"
    t1 = root / "train_36766f85" / "checkpoints"
    for i, step in enumerate((2000, 4000, 6000, 8000, 10000, 12000)):
        for layer in (7, 14, 18):
            if step == 6000 and layer == 18:
                continue
            p = t1 / f"checkpoint_{step}" / f"layer_{layer}" / "checkpoint.safetensors"
            write_sparse_safetensors(p, sae_tensors(), {"step": str(step), "layer_idx": str(layer)})
            mtime = FIXED_NOW - (6 - i) * 3600
            os.utime(p, (mtime, mtime))
    t2 = root / "sae_gpt2_small_l8"
    for i, step in enumerate((10000, 20000, 30000)):
        p = t2 / f"checkpoint_{step}" / "sae.safetensors"
        write_sparse_safetensors(p, sae_tensors(768, 12288), {"step": str(step)})
        mtime = FIXED_NOW - (3 - i) * 86400
        os.utime(p, (mtime, mtime))
    t3 = root / CJK_TRAINING
    for i, step in enumerate((1000, 2000, 3000)):
        p = t3 / f"checkpoint_{step}" / "模型.safetensors"
        write_sparse_safetensors(p, sae_tensors(512, 4096), {"step": str(step)})
        mtime = FIXED_NOW - (3 - i) * 7200
        os.utime(p, (mtime, mtime))
    t4 = root / LONG_TRAINING / "checkpoints"
    for i in range(LONG_STEPS):
        p = t4 / f"checkpoint_{(i + 1) * 500}" / "layer_0" / "checkpoint.safetensors"
        write_sparse_safetensors(p, sae_tensors(64, 512), {"step": str((i + 1) * 500)})
        mtime = FIXED_NOW - (LONG_STEPS - i) * 600
        os.utime(p, (mtime, mtime))
    return root


@pytest.fixture
def no_newest_protection() -> Protection:
    return Protection(newest_step=False)

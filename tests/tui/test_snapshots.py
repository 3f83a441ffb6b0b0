"""Snapshot tests: fixed tree (fixed mtimes), fixed clock, fixed display root and disk usage."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Label

from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.app import CkptApp
from ckpt_tui.tui.model import Kind
from ckpt_tui.types import DeleteProgress, ExecuteResult, ItemResult, Outcome, Plan

from .conftest import DISPLAY_ROOT, FIXED_NOW, SIZE, build_fixed_tree, fake_disk, settle, until


@pytest.fixture
def fixed_app(tmp_path: Path) -> CkptApp:
    root = build_fixed_tree(tmp_path)
    db = tmp_path / "index.sqlite3"

    async def index() -> None:
        async with await CheckpointService.open(str(db)) as svc:
            await svc.scan(str(root))

    asyncio.run(index())  # snap_compare runs the app in its own loop: the app opens the index
    return CkptApp(
        str(root),
        str(db),
        now=lambda: FIXED_NOW,
        clock=lambda: 0.0,  # elapsed time (the deletion's rate) never moves in a snapshot
        display_root=DISPLAY_ROOT,
        disk_usage=fake_disk(),
    )


async def _open_training(app: CkptApp, pilot: Any) -> None:
    await settle(app, pilot)
    await pilot.press("down", "right")  # cursor starts on sae_gpt2_small_l8
    await settle(app, pilot)
    await pilot.press("down", "down", "space", "space")  # mark checkpoint_4000 and _6000
    await settle(app, pilot)


def test_main_screen(snap_compare: Any, fixed_app: CkptApp) -> None:
    async def run_before(pilot: Any) -> None:
        await _open_training(fixed_app, pilot)

    assert snap_compare(fixed_app, terminal_size=SIZE, run_before=run_before)


def test_confirm_dialog(snap_compare: Any, fixed_app: CkptApp) -> None:
    async def run_before(pilot: Any) -> None:
        await _open_training(fixed_app, pilot)
        await pilot.press("d")
        await settle(fixed_app, pilot)

    assert snap_compare(fixed_app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare: Any, fixed_app: CkptApp) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(fixed_app, pilot)
        await pilot.press("question_mark")
        await settle(fixed_app, pilot)

    assert snap_compare(fixed_app, terminal_size=SIZE, run_before=run_before)


def test_deletion_in_progress(snap_compare: Any, fixed_app: CkptApp) -> None:
    """The first step's files are reported gone, then the deletion holds still.

    The screenshot is taken only once the app has applied that progress (the first step's row
    is gone, the progress line counts its files): a condition, not a number of pauses."""
    reported = asyncio.Event()
    first_step: list[int] = []

    async def frozen_execute(
        plan: Plan, on_progress: Any = None, cancel: Any = None, **_kw: Any
    ) -> ExecuteResult:
        first = plan.steps[0]
        first_step.append(first.step_id)
        freed = 0
        for i, f in enumerate(first.files):
            freed += f.freed_bytes
            on_progress(
                DeleteProgress(
                    ItemResult(
                        f.file_id, first.step_id, f.path_rel, Outcome.DELETED, f.freed_bytes
                    ),
                    i + 1,
                    plan.file_count,
                    freed,
                    plan.bytes,
                )
            )
        on_progress(
            DeleteProgress(
                None,
                len(first.files),
                plan.file_count,
                freed,
                plan.bytes,
                (first.path,),
                (first.step_id,),
            )
        )
        reported.set()
        await asyncio.Event().wait()  # never finishes while the screenshot is taken
        raise AssertionError("unreachable")

    async def run_before(pilot: Any) -> None:
        await _open_training(fixed_app, pilot)
        assert fixed_app.svc is not None
        fixed_app.svc.execute = frozen_execute  # type: ignore[method-assign]
        await pilot.press("d")
        await settle(fixed_app, pilot)
        await pilot.press("y")
        label = fixed_app.query_one("#progress-label", Label)

        def applied() -> bool:
            return (
                reported.is_set()
                and str(label.content).startswith("Deleting 3/5 files")
                and all(n.id != first_step[0] for n in fixed_app.model.rows if n.kind == Kind.STEP)
            )

        await until(pilot, applied, "the first step's progress on screen")

    assert snap_compare(fixed_app, terminal_size=SIZE, run_before=run_before)

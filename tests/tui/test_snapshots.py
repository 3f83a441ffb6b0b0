"""Snapshot tests at 80x24 and 120x40: fixed tree (fixed mtimes), fixed clock, fixed display
root and disk usage. Each waits on a condition the screen depends on, never on a pause count."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Label

from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.app import CkptApp
from ckpt_tui.tui.model import Kind
from ckpt_tui.tui.screens.confirm import ConfirmScreen
from ckpt_tui.tui.screens.help import HelpScreen
from ckpt_tui.tui.screens.keep import KeepNewestScreen
from ckpt_tui.types import DeleteProgress, ExecuteResult, ItemResult, Outcome, Plan

from .conftest import (
    CJK_TRAINING,
    DISPLAY_ROOT,
    FIXED_NOW,
    LONG_TRAINING,
    build_fixed_tree,
    fake_disk,
    goto,
    settle,
    until,
)

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])


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


async def _open(app: CkptApp, pilot: Any, training: str) -> None:
    """Open the app, expand ``training`` and stay on its row."""
    await settle(app, pilot)
    await goto(app, pilot, training)
    await pilot.press("right")
    await until(
        pilot, lambda: app.ckpt_tree.node is not None and app.ckpt_tree.node.expanded, "expand"
    )


async def _marked_two(app: CkptApp, pilot: Any) -> None:
    await _open(app, pilot, "train_36766f85")
    await pilot.press("down", "down", "space", "space")  # mark checkpoint_4000 and _6000
    await until(pilot, lambda: app.marks.marked_steps() == 2, "two marked steps")


@SIZES
def test_main_screen(snap_compare: Any, fixed_app: CkptApp, size: tuple[int, int]) -> None:
    """Names whole at 80 columns (columns drop instead), marks, the protected newest step."""

    async def run_before(pilot: Any) -> None:
        await _marked_two(fixed_app, pilot)

    assert snap_compare(fixed_app, terminal_size=size, run_before=run_before)


@SIZES
def test_expanded_cjk(snap_compare: Any, fixed_app: CkptApp, size: tuple[int, int]) -> None:
    """A CJK training and file name: columns stay aligned (widths are cells, not chars)."""

    async def run_before(pilot: Any) -> None:
        await _open(fixed_app, pilot, CJK_TRAINING)
        await pilot.press("down", "right")
        await until(
            pilot,
            lambda: "checkpoint_1000" in [n.name for n in fixed_app.model.rows if n.expanded],
            "step open",
        )
        await pilot.press("down")
        await until(
            pilot,
            lambda: (
                fixed_app.ckpt_tree.node is not None and fixed_app.ckpt_tree.node.kind == Kind.FILE
            ),
            "on the file",
        )
        await settle(fixed_app, pilot)

    assert snap_compare(fixed_app, terminal_size=size, run_before=run_before)


@SIZES
def test_confirm_many_steps(snap_compare: Any, fixed_app: CkptApp, size: tuple[int, int]) -> None:
    """59 steps and one protected (the newest, marked by hand): per step, buttons whole."""

    async def run_before(pilot: Any) -> None:
        await settle(fixed_app, pilot)
        await goto(fixed_app, pilot, LONG_TRAINING)
        await pilot.press("space")  # the training: every step but the protected newest
        await until(pilot, lambda: fixed_app.marks.marked_steps() == 59, "59 marked steps")
        await pilot.press("right")
        await until(
            pilot, lambda: "checkpoint_30000" in [n.name for n in fixed_app.model.rows], "steps"
        )
        await goto(fixed_app, pilot, "checkpoint_30000")
        await pilot.press("space")  # and the newest by hand
        await until(pilot, lambda: fixed_app.marks.marked_steps() == 60, "60 marked steps")
        await pilot.press("d")
        await until(
            pilot,
            lambda: isinstance(fixed_app.screen, ConfirmScreen) and not fixed_app.screen.pending,
            "the checked plan",
        )

    assert snap_compare(fixed_app, terminal_size=size, run_before=run_before)


@SIZES
def test_help_scrolled_to_end(snap_compare: Any, fixed_app: CkptApp, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(fixed_app, pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(fixed_app.screen, HelpScreen), "help")
        await pilot.press("end")
        body = fixed_app.screen.query_one("#help-body")
        await until(pilot, lambda: body.scroll_y == body.max_scroll_y, "scrolled to the end")

    assert snap_compare(fixed_app, terminal_size=size, run_before=run_before)


@SIZES
def test_keep_dialog(snap_compare: Any, fixed_app: CkptApp, size: tuple[int, int]) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(fixed_app, pilot)
        await goto(fixed_app, pilot, "train_36766f85")
        await pilot.press("K")
        await until(pilot, lambda: isinstance(fixed_app.screen, KeepNewestScreen), "keep dialog")
        screen = fixed_app.screen
        for box in screen.query(Input):
            box.cursor_blink = False  # a blinking cursor is on or off by chance in a screenshot
        await pilot.press("backspace", "2", "tab", "tab", *"4000")
        await until(
            pilot,
            lambda: (
                screen.plan is not None
                and screen._plan_key is not None
                and screen._plan_key[0].every == 4000
            ),
            "preview",
        )
        await settle(fixed_app, pilot)

    assert snap_compare(fixed_app, terminal_size=size, run_before=run_before)


@SIZES
def test_deletion_in_progress(snap_compare: Any, fixed_app: CkptApp, size: tuple[int, int]) -> None:
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
        await _marked_two(fixed_app, pilot)
        assert fixed_app.svc is not None
        fixed_app.svc.execute = frozen_execute  # type: ignore[method-assign]
        await pilot.press("d")
        await until(
            pilot,
            lambda: isinstance(fixed_app.screen, ConfirmScreen) and not fixed_app.screen.pending,
            "the checked plan",
        )
        await pilot.press("y")
        label = fixed_app.query_one("#progress-label", Label)

        def applied() -> bool:
            return (
                reported.is_set()
                and str(label.content).startswith("Deleting 3/5 files")
                and all(n.id != first_step[0] for n in fixed_app.model.rows if n.kind == Kind.STEP)
            )

        await until(pilot, applied, "the first step's progress on screen")

    assert snap_compare(fixed_app, terminal_size=size, run_before=run_before)

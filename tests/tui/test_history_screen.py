"""H: the deletion history screen shows the browser's own deletions (face tui), their steps,
and what they freed; the CLI sees the same record."""

from __future__ import annotations

from ckpt_tui.demo import DemoTree
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.screens.history import HistoryScreen

from .conftest import SIZE, goto, make_app, screen_lines, settle, until


async def test_history_screen_lists_a_tui_deletion(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("H")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "history screen")
        await settle(app, pilot)
        assert "no deletions recorded" in "\n".join(screen_lines(app))
        await pilot.press("escape")
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_2000")
        await pilot.press("space")
        await settle(app, pilot)
        await pilot.press("d")
        await settle(app, pilot)
        await pilot.press("y")
        await settle(app, pilot)
        await pilot.press("H")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "history screen")
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        await until(pilot, lambda: bool(screen.runs), "the runs loaded")
        await settle(app, pilot)
        text = "\n".join(screen_lines(app))
        assert "tui" in text and "1 steps" in text and "finished" in text
        assert "train_36766f85/checkpoints/checkpoint_2000" in text and "deleted" in text
        # the training's details name its last deletion
        await pilot.press("escape")
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await until(
            pilot,
            lambda: "last deletion" in "\n".join(screen_lines(app)),
            "the details panel's last deletion",
        )
        text = "\n".join(screen_lines(app))
        assert "1 step deleted by" in text
    (run,) = await service.history(str(demo.root))
    assert run.face == "tui" and run.freed_files == 3 and run.freed_bytes > 0

"""What the screen says in the states a new user meets in tmux at 80x24: before the index is
open, during the first scan, while the confirm dialog checks its plan, a protected step whose
path is too long for one line. Each test waits on the state (an event it holds, a condition),
never on a number of pauses."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.widgets import Button
from textual.widgets._toast import Toast

from ckpt_tui.demo import DemoTree
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.app import CkptApp
from ckpt_tui.tui.model import Kind
from ckpt_tui.tui.screens.confirm import ConfirmScreen
from ckpt_tui.tui.screens.quit import QuitWhileDeletingScreen
from ckpt_tui.tui.widgets.hanging import HangingText, wrap_hanging
from ckpt_tui.types import DeleteProgress, Plan

from .conftest import (
    fake_disk,
    goto,
    make_app,
    mark_and_confirm,
    open_rows,
    screen_lines,
    screen_text,
    settle,
    until,
)

SMALL = (80, 24)


async def filter_by(app: CkptApp, pilot: Any, text: str) -> None:
    """Type a filter with / and Enter, and wait until the rows follow it."""
    await settle(app, pilot)
    await pilot.press("slash", *text, "enter")
    await until(pilot, lambda: app.model.filter == text, "the filter")
    await settle(app, pilot)


def notes(app: CkptApp) -> str:
    return " | ".join(n.message for n in app._notifications)


def test_wrapped_lines_keep_their_indent() -> None:
    from textual.content import Content

    line = Content("  run_alpha_long_name/checkpoints/checkpoint_1000/ (1 file)  newest step")
    assert [c.plain for c in wrap_hanging(line, 40, 4)] == [
        "  run_alpha_long_name/checkpoints/",
        "    checkpoint_1000/ (1 file)  newest",
        "    step",
    ]
    assert wrap_hanging(Content("short"), 40, 4)[0].plain == "short"


async def test_before_and_during_the_first_scan_the_root_shows_no_false_figures(
    demo: DemoTree,
) -> None:
    """The root row is named like the folder from the first frame; until the index has
    figures the root and the header say what is going on, not "0 Bytes · 0 trainings"."""
    svc = await CheckpointService.open(str(demo.db_path))
    opened, scanning = asyncio.Event(), asyncio.Event()
    add_root, scan = svc.add_root, svc.scan

    async def slow_add_root(*a: Any, **kw: Any) -> Any:
        await opened.wait()
        return await add_root(*a, **kw)

    async def slow_scan(*a: Any, **kw: Any) -> Any:
        await scanning.wait()
        return await scan(*a, **kw)

    svc.add_root = slow_add_root  # type: ignore[method-assign]
    svc.scan = slow_scan  # type: ignore[method-assign]
    app = make_app(demo, svc, disk_usage=fake_disk())
    try:
        async with app.run_test(size=SMALL) as pilot:
            await until(pilot, lambda: app.model.pending == "opening…", "the first frame")
            lines = screen_lines(app)
            assert "opening…" in lines[0] and "0 Bytes" not in lines[0]
            assert "114.6 GiB free" in lines[1], "disk usage from the first frame"
            root_row = lines[3]
            assert "▼ trainings" in root_row and str(demo.root) not in root_row
            assert "opening…" in root_row and "0 Bytes" not in root_row and "█" not in root_row
            opened.set()
            await until(pilot, lambda: app.model.pending == "scanning…", "the first scan")
            lines = screen_lines(app)
            assert "scanning…" in lines[0] and "0 Bytes apparent" not in lines[0]
            assert "scanning…" in lines[3] and "0 trainings" not in lines[3]
            scanning.set()
            await settle(app, pilot)
            lines = screen_lines(app)
            assert app.model.pending == "" and "4 trainings" in lines[3]
            assert "GiB apparent" in lines[0]
    finally:
        await svc.close()


async def test_the_confirm_dialog_keeps_its_buttons_and_answers_inside_while_checking(
    demo: DemoTree, service: CheckpointService
) -> None:
    """At 80x24 a toast (2 steps left unmarked) and y pressed before the plan is checked:
    the buttons stay on screen, the answer is a line in the dialog, no toast covers it."""
    checked = asyncio.Event()
    plan_files = service.plan_files

    async def slow_plan(*a: Any, **kw: Any) -> Any:
        await checked.wait()
        return await plan_files(*a, **kw)

    service.plan_files = slow_plan  # type: ignore[method-assign]
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("space")  # the training: its protected steps are left, with a toast
        await until(pilot, lambda: app.marks.marked_steps() > 0, "marks")
        assert app._notifications, "the 'left unmarked' toast is up when d is pressed"
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the dialog")
        screen = app.screen
        assert isinstance(screen, ConfirmScreen)
        await pilot.press("y")
        note = screen.query_one("#confirm-note", HangingText)
        await until(pilot, lambda: "Still checking" in note.plain, "the answer to y")
        text = screen_text(app)
        assert "Cancel (n)" in text and "Delete (y)" in text
        assert "Still checking the plan" in text
        assert all(not t.visible for t in screen.query(Toast)), "no toast over the dialog"
        assert screen.query_one("#confirm", Button).disabled
        checked.set()
        await until(pilot, lambda: not screen.pending, "the checked plan")
        assert not note.display
        assert "Cancel (n)" in screen_text(app) and "Delete (y)" in screen_text(app)


async def test_a_protected_step_too_long_for_a_line_wraps_under_itself(
    demo: DemoTree, service: CheckpointService
) -> None:
    """The newest step marked by hand at 80x24: its folder and reason continue indented,
    never at the dialog's left edge where they would read as a new entry."""
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await open_rows(app, pilot, "train_36766f85")
        steps = [n for n in app.model.rows if n.kind == Kind.STEP]
        await goto(app, pilot, max(steps, key=lambda n: n.number).name)
        await pilot.press("space", "d")
        await until(
            pilot,
            lambda: isinstance(app.screen, ConfirmScreen) and not app.screen.pending,
            "the checked plan",
        )
        lines = screen_lines(app)
        start = next(i for i, line in enumerate(lines) if "Kept: protected (1)" in line)
        entry, more = lines[start + 1], lines[start + 2]
        assert entry.startswith("█   train_36766f85/")
        assert more.startswith("█     ") and more[6] != " ", "continued two cells deeper"
        words = " ".join(part.strip("█ ") for part in (entry, more))
        assert "newest step with a valid checkpoint" in words


async def test_the_quit_question_follows_the_running_deletion(
    demo: DemoTree, service: CheckpointService
) -> None:
    """q while deleting: the question's progress line moves with the run (it froze at the
    moment q was pressed), and says so when the run ends under it."""
    progressed, finish = asyncio.Event(), asyncio.Event()
    execute = service.execute
    reported: list[str] = []

    async def stepwise(plan: Plan, on_progress: Any = None, cancel: Any = None, **kw: Any) -> Any:
        await progressed.wait()
        first = plan.steps[0]
        reported.append(f"Deleting {len(first.files)}/{plan.file_count} files")
        on_progress(DeleteProgress(None, len(first.files), plan.file_count, 0, plan.bytes))
        await finish.wait()
        return await execute(plan, on_progress, cancel, **kw)

    service.execute = stepwise  # type: ignore[method-assign]
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await mark_and_confirm(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("y")
        await until(pilot, lambda: app.deleting, "the run")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitWhileDeletingScreen), "the question")
        line = app.screen.query_one("#quit-progress", HangingText)
        assert line.plain.startswith("Deleting 0/")
        progressed.set()
        await until(pilot, lambda: bool(reported) and reported[0] in line.plain, "progress")
        assert reported[0] in screen_text(app)
        finish.set()
        await until(pilot, lambda: "has finished" in line.plain, "the run's end")
        assert "The deletion has finished: q quits, n stays." in screen_text(app)
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, QuitWhileDeletingScreen), "closed")
        assert app.is_running


async def test_an_active_filter_keeps_the_footer_whole_and_says_how_to_clear_it(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await filter_by(app, pilot, "4000")
        lines = screen_lines(app)
        footer = lines[-1].rstrip()
        assert "? Help" in footer and "q Quit" in footer
        assert footer.split("q Quit")[1].strip().startswith("▏^p palette"), "nothing cut"
        assert "filter 4000 (Esc clears)" in lines[2]
        t = next(n for n in app.model.rows if n.kind == Kind.TRAINING)
        shown, total = len(app.model.visible_children(t)), len(t.children or [])
        row = next(line for line in lines if f"▶ {t.name} " in line or f"▼ {t.name} " in line)
        assert shown < total and f"{shown} of {total}" in row, "how many steps are listed"


async def test_an_empty_history_is_one_line_not_an_empty_box(
    demo: DemoTree, service: CheckpointService
) -> None:
    from textual.widgets import OptionList

    from ckpt_tui.tui.screens.history import HistoryScreen

    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await pilot.press("H")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen), "history")
        await settle(app, pilot)
        assert not app.screen.query_one(OptionList).display
        text = screen_text(app)
        assert "no deletions recorded under this root yet" in text and "▔▔▔" not in text


async def test_an_interrupted_deletion_is_reported_on_opening_and_d_on_its_step_finishes_it(
    demo: DemoTree, service: CheckpointService
) -> None:
    from sqlalchemy import text

    async with service.db.engine.begin() as conn:
        sid, training = (
            await conn.execute(
                text(
                    "SELECT s.id, t.name FROM steps s JOIN trainings t ON t.id = s.training_id "
                    "WHERE s.dirname = 'checkpoint_10000' ORDER BY t.name"
                )
            )
        ).first()
        await conn.execute(text("UPDATE files SET state='deleting' WHERE step_id=:s"), {"s": sid})
    app = make_app(demo, service, read_only=True)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        assert "A deletion stopped" in notes(app) and "1 step (checkpoint_10000)" in notes(app)
        assert "Read-only: nothing is finished here" in notes(app)
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        assert "(d) finishes it first" in notes(app)
        # its step marked and d: nothing can be planned for it, the dialog offers to finish it
        await mark_and_confirm(app, pilot, training, "checkpoint_10000")
        shown = screen_text(app)
        assert "Finish the interrupted deletion?" in shown and "Finish it (y)" in shown
        step_dir = demo.root / training / "checkpoint_10000"
        assert step_dir.exists()
        await pilot.press("y")
        await until(pilot, lambda: not step_dir.exists(), "the interrupted step finished")
        await settle(app, pilot)
        assert "Finished the interrupted deletion" in notes(app)
        assert "checkpoint_10000" not in [n.name for n in app.model.rows]
        assert await service.interrupted() is None


async def test_a_in_the_confirm_dialog_switches_its_sizes_like_the_browser(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await mark_and_confirm(app, pilot, "sae_gpt2_small_l8")
        text = app.screen.query_one("#confirm-text", HangingText)
        before = [line for line in text.plain.splitlines() if "checkpoint_10000/" in line]
        assert "MiB" in before[0], "apparent sizes first (sparse files: large)"
        await pilot.press("a")
        await until(pilot, lambda: not app.units.apparent, "disk usage")
        after = [line for line in text.plain.splitlines() if "checkpoint_10000/" in line]
        assert after != before and "KiB" in after[0], "the step's disk usage (a sparse file)"
        assert "sizes disk usage" in screen_lines(app)[2] or not app.units.apparent


async def test_a_step_kept_only_for_its_foreign_file_is_not_called_partial(
    demo: DemoTree, service: CheckpointService
) -> None:
    """Every checkpoint file of the step marked; a notes file keeps the folder. The dialog
    says that, not "left partial (only some files marked)"."""
    import os

    step = demo.root / "sae_gpt2_small_l8" / "checkpoint_10000"
    notes_file = step / "notes.txt"
    notes_file.write_text("eval notes\n")
    os.utime(notes_file, (1.7e9, 1.7e9))  # old: no live-writer protection
    await service.scan(str(demo.root))
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await mark_and_confirm(app, pilot, "sae_gpt2_small_l8", "checkpoint_10000")
        said = " ".join(app.screen.query_one("#confirm-text", HangingText).plain.split())
        assert "(the step stays for its foreign files)" in said
        assert "partial" not in said
        assert "Kept: 1 foreign file" in said and "notes.txt" in said


async def test_the_marks_line_keeps_the_rescan_hint_whole_at_80_columns(
    demo: DemoTree, service: CheckpointService
) -> None:
    """'freed 0 Bytes' (nothing yet) gives its room to the note; a note that does not fit
    drops its last '·' part whole, never ends in a cut word."""
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await open_rows(app, pilot, "train_36766f85")
        await pilot.press("down", "space", "space")
        await until(pilot, lambda: app.marks.marked_steps() == 2, "two marked steps")
        line = screen_lines(app)[2].rstrip()
        assert line.startswith(" marked 2 steps · 6 files · ")
        assert "freed" not in line and line.endswith("ago · r rescans"), line


async def test_v_at_80_columns_puts_the_details_under_the_tree_across_the_screen(
    demo: DemoTree, service: CheckpointService
) -> None:
    from ckpt_tui.tui.widgets.details import DetailsPanel

    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        panel = app.query_one(DetailsPanel)
        assert not panel.display
        await pilot.press("v")
        await until(pilot, lambda: panel.display and panel.region.width > 0, "the details")
        assert panel.region.width == SMALL[0], "its top rule spans the screen (was 56 cells)"
        rule = screen_lines(app)[panel.region.y]
        assert rule.strip("▔") == "", rule


async def test_a_filter_that_matches_nothing_says_so(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await filter_by(app, pilot, "xyz")
        lines = screen_lines(app)
        assert "0 of 4" in lines[3], "the root says how many trainings are listed"
        assert "No training or step name contains “xyz”." in lines[5]
        assert "Esc clears the filter" in lines[7]
        await pilot.press("escape")
        await until(pilot, lambda: app.model.filter == "", "cleared")
        assert "4 trainings" in screen_lines(app)[3] and "contains" not in screen_text(app)


async def test_a_worker_finishing_after_the_screen_is_gone_does_not_raise(
    demo: DemoTree, service: CheckpointService
) -> None:
    """A scan or reload that ends while the app closes updates the header, the empty hint and
    the details: with the screen gone that raised NoMatches('StatusBar') out of the exit."""
    app = make_app(demo, service)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
    app.refresh_status()
    app._show_empty()
    app.update_details()
    app.set_pending("")

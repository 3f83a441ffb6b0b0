"""Pilot tests for the keys and states the other tests do not reach, each checked on what the
user sees: the screen text, the notifications, the files on disk."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from textual.command import CommandPalette

from ckpt_tui.demo import DemoTree
from ckpt_tui.planning import Protection
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.app import CkptApp
from ckpt_tui.tui.model import Kind
from ckpt_tui.tui.screens.confirm import ConfirmScreen
from ckpt_tui.tui.screens.help import HelpScreen
from ckpt_tui.tui.screens.keep import KeepNewestScreen
from ckpt_tui.tui.screens.quit import QuitWhileDeletingScreen
from ckpt_tui.tui.widgets.details import DetailsPanel
from ckpt_tui.tui.widgets.hanging import HangingText
from ckpt_tui.types import ExecuteResult, ForeignFile, Plan

from .conftest import (
    CJK_TRAINING,
    SIZE,
    build_fixed_tree,
    goto,
    make_app,
    mark_and_confirm,
    row_names,
    screen_lines,
    screen_text,
    settle,
    until,
)


def notes(app: CkptApp) -> str:
    return " | ".join(n.message for n in app._notifications)


def tree_lines(app: CkptApp) -> list[str]:
    """The tree's part of the screen (without the details panel beside it)."""
    r = app.ckpt_tree.region
    return [line[r.x : r.x + r.width] for line in screen_lines(app)[r.y : r.y + r.height]]


def cursor_name(app: CkptApp) -> str:
    node = app.ckpt_tree.node
    return node.name if node is not None else ""


async def test_j_k_end_home_pageup_pagedown_move_the_cursor(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        await pilot.press("j")
        assert cursor_name(app) == "checkpoint_2000"
        await pilot.press("k")
        assert cursor_name(app) == "train_36766f85"
        await pilot.press("end")
        assert cursor_name(app) == row_names(app)[-1]
        await pilot.press("pageup")
        top = app.ckpt_tree.cursor
        assert 0 < top < len(app.model.rows) - 10  # a page, not the top
        await pilot.press("pagedown")
        assert app.ckpt_tree.cursor == len(app.model.rows) - 1
        await pilot.press("home")
        assert app.ckpt_tree.cursor == 0
        await pilot.press("k")  # the cursor stays on a row
        assert app.ckpt_tree.cursor == 0


async def test_u_clears_and_i_inverts_within_the_training(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_10000")
        await pilot.press("space")
        await settle(app, pilot)
        assert "marked 1 step" in screen_text(app)
        await pilot.press("i")  # the other steps, except the protected newest one
        await settle(app, pilot)
        assert "marked 2 steps" in screen_text(app)
        training = app.model.trainings[1]
        assert not app.marks.step_marked[
            app.model.rows[app.model.find((Kind.STEP, training.children[0].id))].id
        ]  # type: ignore[index]
        await pilot.press("u")
        await settle(app, pilot)
        assert "marked nothing" in screen_text(app) and "Cleared 2 marks" in notes(app)


async def test_d_with_nothing_marked_offers_the_highlighted_row(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_2000")
        await pilot.press("delete")  # the Delete key, nothing marked
        await until(
            pilot, lambda: isinstance(app.screen, ConfirmScreen) and not app.screen.pending, "plan"
        )
        title = str(app.screen.query_one("#confirm-title").render())
        assert "Delete 1 step (3 files)?" in title
        await pilot.press("y")
        await settle(app, pilot)
        assert not (demo.root / "train_36766f85" / "checkpoints" / "checkpoint_2000").exists()
        assert "checkpoint_2000" not in row_names(app)


async def test_q_quits_and_while_deleting_asks_first(demo: DemoTree) -> None:
    svc = await CheckpointService.open(str(demo.db_path), protection=Protection(newest_step=False))
    try:
        await svc.scan(str(demo.root))
        app = make_app(demo, svc)
        started = asyncio.Event()
        release = asyncio.Event()
        real = svc.execute

        async def held(
            plan: Plan, on_progress: Any = None, cancel: Any = None, **kw: Any
        ) -> ExecuteResult:
            started.set()
            await release.wait()  # the user decides while the run is on
            return await real(plan, on_progress, cancel, **kw)

        svc.execute = held  # type: ignore[method-assign]
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            await goto(app, pilot, "sae_gpt2_small_l8")
            await pilot.press("space", "d")
            await until(
                pilot,
                lambda: isinstance(app.screen, ConfirmScreen) and not app.screen.pending,
                "plan",
            )
            await pilot.press("y")
            await until(pilot, started.is_set, "the run")
            assert "esc Stop" in screen_lines(app)[-1] and "Deleting" in screen_text(app)
            await pilot.press("q")
            await until(
                pilot, lambda: isinstance(app.screen, QuitWhileDeletingScreen), "the question"
            )
            text = screen_text(app)
            assert "Keep deleting (n)" in text and "Stop and quit (q)" in text
            await pilot.press("n")  # keep going
            await until(
                pilot, lambda: not isinstance(app.screen, QuitWhileDeletingScreen), "closed"
            )
            assert app.deleting and app.is_running
            await pilot.press("q")
            await until(
                pilot, lambda: isinstance(app.screen, QuitWhileDeletingScreen), "asked again"
            )
            await pilot.press("q")  # stop after the current file, then quit
            release.set()
            await until(pilot, lambda: not app.is_running, "the app quits", timeout=30)
        # stopped before the first file: nothing was deleted, the index agrees
        assert len(list((demo.root / "sae_gpt2_small_l8").rglob("*.safetensors"))) == 4
    finally:
        await svc.close()


async def test_q_quits_when_idle(demo: DemoTree, service: CheckpointService) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, "quit")
    assert app.return_code == 0


async def test_ctrl_p_opens_the_palette_and_runs_a_command(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        await pilot.press(*"cycle sort")
        await until(pilot, lambda: "Cycle sort" in screen_text(app), "the command listed")
        await pilot.press("enter")
        await until(pilot, lambda: app.model.sort.value == "size", "sorted by size")
        assert "sort size" in screen_text(app)


async def test_r_rescans_one_training(demo: DemoTree, service: CheckpointService) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "sae_gpt2_small_l8")
        new = demo.root / "sae_gpt2_small_l8" / "checkpoint_50000" / "sae.safetensors"
        new.parent.mkdir()
        new.write_bytes(
            (demo.root / "sae_gpt2_small_l8" / "checkpoint_10000" / "sae.safetensors").read_bytes()
        )
        await pilot.press("r")
        await until(pilot, lambda: not app.scanning and "scanned" in screen_text(app), "the scan")
        await settle(app, pilot)
        assert "5 steps" in screen_text(app)
        assert "scanned 5 files" in screen_text(app)  # that training's files only


async def test_s_cycles_trainings_and_steps_through_size_and_age(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await settle(app, pilot)
        trainings = [n.name for n in app.model.rows if n.kind == Kind.TRAINING]
        assert trainings[0] == "train_36766f85"  # the biggest first, as ncdu
        assert "size, biggest first" in notes(app)
        await pilot.press("s")  # age: oldest first
        await settle(app, pilot)
        ages = [n.mtime_ns for n in app.model.rows if n.kind == Kind.TRAINING]
        assert ages == sorted(ages) and "sort age" in screen_text(app)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        steps = [n for n in app.model.rows if n.kind == Kind.STEP]
        assert [s.mtime_ns for s in steps] == sorted(s.mtime_ns for s in steps)


async def test_a_switches_every_size_between_apparent_and_disk(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        before = screen_lines(app)[4]  # a training row: its apparent size (sparse demo files)
        assert "GiB" in before
        await pilot.press("a")
        await settle(app, pilot)
        assert "sizes disk usage" in screen_text(app) and "Sizes: disk usage" in notes(app)
        after = screen_lines(app)[4]
        assert "GiB" not in after and "KiB" in after  # the sparse files use almost no disk


async def test_v_toggles_the_details_panel_and_it_gives_way_at_80_columns(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        panel = app.query_one(DetailsPanel)
        assert not panel.display  # 80 columns: the names get the width
        await pilot.press("v")
        await settle(app, pilot)
        assert panel.display and panel.region.y > app.ckpt_tree.region.y  # under the tree
        assert "path" in screen_text(app)
        await pilot.press("v")
        await settle(app, pilot)
        assert not panel.display
    app = make_app(demo, service)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        panel = app.query_one(DetailsPanel)
        assert panel.display and panel.region.x > app.ckpt_tree.region.x  # beside the tree


async def test_read_only_d_says_why_and_the_footer_has_no_delete(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        footer = screen_lines(app)[-1]
        assert "Delete" not in footer and "? Help" in footer and "q Quit" in footer
        await pilot.press("d")
        await settle(app, pilot)
        assert "--read-only" in notes(app) and not isinstance(app.screen, ConfirmScreen)


async def test_80x24_names_whole_header_one_line_footer_keeps_help_and_quit(
    tmp_path: Path,
) -> None:
    deep = tmp_path / "a-rather-long-directory-name" / "experiments" / "2026" / "sae-sweeps"
    root = build_fixed_tree(deep)
    db = tmp_path / "index.sqlite3"
    async with await CheckpointService.open(str(db)) as svc:
        await svc.scan(str(root))
    app = CkptApp(str(root), str(db))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        lines = screen_lines(app)
        assert lines[0].startswith(" ckpt-tui /") and "…" in lines[0]  # the path, cut in the middle
        assert lines[1].lstrip().startswith("disk")  # the header did not wrap
        assert lines[2].lstrip().startswith("marked")
        assert "? Help" in lines[-1] and "q Quit" in lines[-1]
        text = "\n".join(lines)
        assert "train_36766f85" in text and "checkpoint_10000" in text  # names read in full
        assert all(cell_len(line) == 80 for line in lines)


async def test_cjk_names_keep_the_columns_aligned(tmp_path: Path) -> None:
    root = build_fixed_tree(tmp_path)
    db = tmp_path / "index.sqlite3"
    async with await CheckpointService.open(str(db)) as svc:
        await svc.scan(str(root))
    app = CkptApp(str(root), str(db))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, CJK_TRAINING)
        await pilot.press("right")
        await settle(app, pilot)
        await pilot.press("down", "right")
        await settle(app, pilot)
        lines = [line for line in screen_lines(app)[3:-1] if "iB" in line]
        # the size column ends in the same cell on every row, wide characters or not
        ends = {cell_len(line[: line.index("iB") + 2]) for line in lines}
        assert len(ends) == 1, lines
        assert any(CJK_TRAINING in line for line in lines) and any(
            "模型.safetensors" in line for line in lines
        )


async def test_details_panel_never_shows_tree_text(
    demo: DemoTree, service: CheckpointService
) -> None:
    """A row longer than the tree would spill into the panel on a partial repaint: every line
    the tree renders is exactly its width."""
    app = make_app(demo, service)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        for key in ("down", "right", "down", "right", "question_mark", "escape"):
            await pilot.press(key)
            await settle(app, pilot)
            tree = app.ckpt_tree
            for y in range(tree.size.height):
                assert tree.render_line(y).cell_length == tree.scrollable_size.width


async def test_keep_dialog_title_follows_all_trainings_and_enter_on_the_box_only_ticks(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("K")
        await until(pilot, lambda: isinstance(app.screen, KeepNewestScreen), "keep dialog")
        screen = app.screen
        assert "of train_36766f85" in screen_text(app) and "[ ] all trainings" in screen_text(app)
        screen.query_one("#keep-all").focus()
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, KeepNewestScreen), "Enter on the box did not mark"
        assert "[✓] all trainings" in screen_text(app) and "of all trainings" in screen_text(app)
        assert "Mark (Enter)" in screen_text(app) and "Cancel (Esc)" in screen_text(app)
        preview = screen.query_one("#keep-preview", HangingText).plain
        kept = int(preview.split("keeps ")[1].split(" ")[0])
        listed = preview.count("  keep ")
        m = re.search(r"… and (\d+) more kept", preview)
        more = int(m.group(1)) if m else 0
        assert kept == listed + more  # "keeps N steps" is what it lists


async def test_help_scrolls_to_the_legend(demo: DemoTree, service: CheckpointService) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        assert "disk usage" not in screen_text(app)  # the end is below the fold at 80x24
        await pilot.press("pagedown", "pagedown", "pagedown")
        await settle(app, pilot)
        await pilot.press("end")
        await settle(app, pilot)
        assert "Sizes are binary" in screen_text(app) and "⊘" in screen_text(app)
        await pilot.press("home")
        await settle(app, pilot)
        assert "move" in screen_text(app)


async def test_empty_root_says_so_and_lists_the_layouts(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    (root / "notes").mkdir(parents=True)
    app = CkptApp(str(root), str(tmp_path / "index.sqlite3"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await until(pilot, lambda: "No checkpoints found" in screen_text(app), "the empty state")
        text = screen_text(app)
        assert "checkpoint_<step>" in text and "HF Trainer" in text and "SAELens" in text
        lines = screen_lines(app)
        # at 80 columns a long pattern wraps under itself, never cut ("…/layer_<n>/*.")
        assert any(line.strip() == "*.safetensors" for line in lines)
        assert any(line.strip() == "sae_weights.safetensors, cfg.json" for line in lines)
        assert "0 Bytes" in lines[3] and "█" not in lines[3], "no full bar for an empty root"


async def test_confirm_lists_foreign_files_and_ticking_replans(
    demo: DemoTree, service: CheckpointService
) -> None:
    """The dialog re-plans with include_foreign when its box is ticked (the service's answer
    is faked so the test does not depend on which files the scanner calls foreign)."""
    calls: list[dict[str, bool]] = []
    real = service.plan_files

    async def plan_files(root_id: int, ids: Any, **kw: bool) -> Plan:
        calls.append(kw)
        plan = await real(root_id, ids, **kw)
        if kw.get("include_foreign"):
            return plan
        foreign = tuple(
            ForeignFile(f"{demo.root}/sae_gpt2_small_l8/checkpoint_10000/notes_{i}.txt", 10, 1)
            for i in range(12)
        )
        return Plan(plan.root_id, plan.root, plan.steps, plan.keep, plan.protected, 0.0, foreign)

    service.plan_files = plan_files  # type: ignore[method-assign]
    app = make_app(demo, service)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("space", "d")
        await until(
            pilot, lambda: isinstance(app.screen, ConfirmScreen) and not app.screen.pending, "plan"
        )
        text = app.screen.query_one("#confirm-text", HangingText).plain
        assert "Kept: 12 foreign files" in text and "notes_0.txt" in text and "… and 4 more" in text
        assert "[ ] also delete these 12 foreign files" in screen_text(app)
        app.screen.query_one("#confirm-foreign").focus()
        await pilot.press("space")
        await until(pilot, lambda: len(calls) == 2 and not app.screen.pending, "the re-plan")  # type: ignore[attr-defined]
        assert calls[-1]["include_foreign"] is True and calls[-1]["force"] is False
        await pilot.press("escape")
        await settle(app, pilot)
        assert "Cancelled: nothing was deleted" in notes(app)


async def test_including_protected_steps_deletes_the_newest(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_40000")
        assert "⊘" in next(line for line in tree_lines(app) if "checkpoint_40000" in line)
        await pilot.press("space", "d")  # marked by hand: the dialog names it, once
        await until(
            pilot, lambda: isinstance(app.screen, ConfirmScreen) and not app.screen.pending, "plan"
        )
        assert "Nothing can be deleted" in screen_text(app)
        text = app.screen.query_one("#confirm-text", HangingText).plain
        assert text.count("checkpoint_40000") == 1 and "newest" in text
        app.screen.query_one("#confirm-force").focus()
        await pilot.press("space")
        await until(pilot, lambda: "Delete 1 step" in screen_text(app), "the forced plan")
        await pilot.press("y")
        await settle(app, pilot)
        assert not (demo.root / "sae_gpt2_small_l8" / "checkpoint_40000").exists()
        assert not app.marks.marked


async def test_a_protected_mark_does_not_linger_after_a_deletion(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_30000")
        await pilot.press("space", "space")  # 30000 and the protected 40000
        await pilot.press("d")
        await until(
            pilot, lambda: isinstance(app.screen, ConfirmScreen) and not app.screen.pending, "plan"
        )
        assert "Kept: protected (1)" in app.screen.query_one("#confirm-text", HangingText).plain
        await pilot.press("y")
        await settle(app, pilot)
        assert (demo.root / "sae_gpt2_small_l8" / "checkpoint_40000").exists()
        assert not app.marks.marked and "marked nothing" in screen_text(app)


async def test_filter_hidden_marks_are_named_in_the_confirm(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_10000")
        await pilot.press("space", "space")
        await pilot.press("slash", *"20000", "enter")
        await settle(app, pilot)
        await pilot.press("d")
        await until(
            pilot, lambda: isinstance(app.screen, ConfirmScreen) and not app.screen.pending, "plan"
        )
        text = app.screen.query_one("#confirm-text", HangingText).plain
        assert "1 marked step is hidden by the filter: sae_gpt2_small_l8/checkpoint_10000" in text


async def test_failed_rows_keep_the_cross_after_the_toast(
    demo: DemoTree, service: CheckpointService, monkeypatch: Any
) -> None:
    import os

    victim = demo.root / "sae_gpt2_small_l8" / "checkpoint_10000" / "sae.safetensors"
    real_unlink = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        where = Path(os.readlink(f"/proc/self/fd/{dir_fd}")) / path if dir_fd else Path(path)
        if where == victim:
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await mark_and_confirm(app, pilot, "sae_gpt2_small_l8", "checkpoint_10000")
        await pilot.press("y")
        await settle(app, pilot)
        app.clear_notifications()  # the toast fades
        await settle(app, pilot)
        row = next(line for line in tree_lines(app) if "checkpoint_10000" in line)
        assert "✗" in row and "Permission denied" in row
        await goto(app, pilot, "checkpoint_10000")
        await pilot.press("right", "down")
        await settle(app, pilot)
        details = str(app.query_one(DetailsPanel).render())
        assert "✗ not deleted" in details and "status   ok" not in details.replace("  ", " ")

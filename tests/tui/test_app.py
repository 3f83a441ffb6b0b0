"""Pilot tests: the real app, a real index on tmp_path, real (sparse) checkpoint files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ckpt_tui.demo import DemoTree
from ckpt_tui.planning import Protection
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.model import Kind
from ckpt_tui.tui.screens.confirm import ConfirmScreen
from ckpt_tui.tui.screens.help import HelpScreen
from ckpt_tui.tui.widgets.hanging import HangingText
from ckpt_tui.tui.widgets.status import StatusBar
from ckpt_tui.types import DiskUsage

from .conftest import SIZE, goto, make_app, row_names, screen_lines, settle


def status_text(app: object) -> str:
    bar = app.query_one(StatusBar)  # type: ignore[attr-defined]
    return str(bar.render())


def notes(app: object) -> str:
    return " | ".join(n.message for n in app._notifications)  # type: ignore[attr-defined]


async def test_first_screen_scans_and_starts_on_first_training(demo: DemoTree) -> None:
    app = make_app(demo)  # never indexed: the app scans it first
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert row_names(app)[1:] == [
            "hf_finetune_llama",
            "sae_gpt2_small_l8",
            "train_36766f85",
            "train_9f1c2a0b",
        ]
        node = app.ckpt_tree.node
        assert node is not None and node.name == "hf_finetune_llama"
        text = status_text(app)
        assert "4 trainings" in text and "free of" in text
        first = screen_lines(app)[0]
        assert first.startswith(" ckpt-tui /") and "trainings" in first  # the root, cut to fit


async def test_expand_and_collapse(demo: DemoTree, service: CheckpointService) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        names = row_names(app)
        i = names.index("train_36766f85")
        assert names[i + 1] == "checkpoint_2000" and names[i + 2] == "checkpoint_4000"
        assert "checkpoint_48000" in names  # numeric order, 24 steps
        await pilot.press("l")  # Right on an open row steps into it
        await pilot.press("enter")  # ...and Enter expands the step: its layer files
        await settle(app, pilot)
        assert "layer_7/checkpoint.safetensors" in row_names(app)
        await pilot.press("h", "h")  # collapse the step, then go to the training
        await settle(app, pilot)
        assert "layer_7/checkpoint.safetensors" not in row_names(app)
        assert app.ckpt_tree.node is not None and app.ckpt_tree.node.name == "train_36766f85"
        await pilot.press("left")
        await settle(app, pilot)
        assert "checkpoint_2000" not in row_names(app)


async def test_mark_step_then_training(demo: DemoTree, service: CheckpointService) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_4000")
        await pilot.press("space")
        await settle(app, pilot)
        step = next(n for n in app.model.rows if n.name == "checkpoint_4000")
        assert app.marks.marked == app.marks.ids_of(step) and len(app.marks.marked) == 3
        assert "1 step · 3 files · 735.2 MiB" in status_text(app)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("space")
        await settle(app, pilot)
        training = app.ckpt_tree.node
        assert training is not None and training.kind == Kind.TRAINING
        newest = next(n for n in app.model.rows if n.name == "checkpoint_48000")
        assert app.marks.marked == app.marks.ids_of(training) - app.marks.ids_of(newest)
        assert "23 steps · 68 files" in status_text(app)  # the newest valid step is protected
        assert "1 step left unmarked: newest" in notes(app)
        await pilot.press("space")  # all marked: Space unmarks
        await settle(app, pilot)
        assert not app.marks.marked and "marked nothing" in status_text(app)


async def test_keep_newest_n_previews_then_marks(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("K")
        await settle(app, pilot)
        await pilot.press("backspace", "5")
        await settle(app, pilot)
        preview = app.screen.query_one("#keep-preview", HangingText).plain
        assert "would mark 19 steps" in preview
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.marks.marked_steps() == 19
        steps = await service.steps(app.ckpt_tree.node.id)  # type: ignore[union-attr]
        kept = {s.id for s in steps[-5:]}
        assert not any(app.marks.step_marked[sid] for sid in kept)


async def test_keep_dialog_rules_show_reasons_and_keep_more(
    demo: DemoTree, service: CheckpointService
) -> None:
    """The keep dialog offers the CLI's rules: every K adds kept steps, each with its reason."""
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("K")
        await settle(app, pilot)
        await pilot.press("backspace", "1")
        app.screen.query_one("#keep-every").focus()
        await pilot.press(*"10000")
        await settle(app, pilot)
        preview = app.screen.query_one("#keep-preview", HangingText).plain
        assert "keep train_36766f85/checkpoint_10000: every 10000" in preview
        app.screen.query_one("#keep-best").focus()
        await pilot.press(*"avg_loss:sideways")
        await settle(app, pilot)
        assert "not a rule" in app.screen.query_one("#keep-preview", HangingText).plain
        for _ in "sideways":
            await pilot.press("backspace")
        await pilot.press(*"min")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        steps = await service.steps(app.model.trainings[2].id)
        by_number = {s.step: s.id for s in steps}
        # newest kept, every multiple of 10000 kept, the lowest avg_loss (the newest here)
        assert not app.marks.step_marked[by_number[max(by_number)]]
        assert not app.marks.step_marked[by_number[10000]]
        assert not app.marks.step_marked[by_number[20000]]
        assert app.marks.step_marked[by_number[2000]] and app.marks.step_marked[by_number[12000]]


async def test_pin_blocks_mark_and_persists(demo: DemoTree, service: CheckpointService) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_10000")
        await pilot.press("p")
        await settle(app, pilot)
        await pilot.press("space")
        await settle(app, pilot)
        assert not app.marks.marked
        assert "pinned" in notes(app)
        tid = app.model.trainings[1].id
        assert (await service.steps(tid))[0].pinned  # the pin lives in the index


async def test_marking_a_training_skips_its_pinned_step(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_20000")
        pinned_step = app.ckpt_tree.node
        await pilot.press("p")
        await settle(app, pilot)
        await goto(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("space")
        await settle(app, pilot)
        assert pinned_step is not None
        training = app.model.trainings[1]
        assert not app.marks.step_marked[pinned_step.id], "a pinned step is never marked"
        # the pinned step and the newest valid one (protected) stay unmarked
        assert app.marks.training_marked[training.id] == len(app.marks.by_training[training.id]) - 2
        assert "pinned" in notes(app)


async def test_cancel_deletes_nothing(demo: DemoTree, service: CheckpointService) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_2000")
        await pilot.press("space", "d")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.focused is not None and app.screen.focused.id == "cancel"
        await pilot.press("n")
        await settle(app, pilot)
        await pilot.press("d")
        await settle(app, pilot)
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("d")
        await settle(app, pilot)
        await pilot.press("enter")  # Enter presses the focused button: Cancel
        await settle(app, pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        step_dir = demo.root / "train_36766f85" / "checkpoints" / "checkpoint_2000"
        assert len(list(step_dir.rglob("*.safetensors"))) == 3
        assert app.freed_session == 0 and len(app.marks.marked) == 3


def apparent_disk(root: Path, total: int = 10**12) -> Callable[[str], DiskUsage]:
    """Disk usage as if the files were not sparse: free = total - apparent bytes under root."""

    def usage(_root: str) -> DiskUsage:
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        return DiskUsage(total=total, used=used, free=total - used)

    return usage


async def test_confirm_deletes_rows_vanish_and_freed_grows(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service, disk_usage=apparent_disk(demo.root))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_2000")
        await pilot.press("space", "space")  # marks 2000 and 4000 (Space moves down)
        await settle(app, pilot)
        marked = app.marks.marked_bytes
        free_before = app.disk.free if app.disk else 0
        await pilot.press("d")
        await settle(app, pilot)
        assert "Delete 2 steps (6 files)?" in str(app.screen.query_one("#confirm-title").render())
        await pilot.press("y")
        await settle(app, pilot)
        base = demo.root / "train_36766f85" / "checkpoints"
        assert not (base / "checkpoint_2000").exists() and not (base / "checkpoint_4000").exists()
        assert (base / "checkpoint_6000").exists()
        assert "checkpoint_2000" not in row_names(app) and "checkpoint_6000" in row_names(app)
        assert app.freed_session == marked and not app.marks.marked
        assert "freed 1.4 GiB" in status_text(app)
        assert app.disk is not None and app.disk.free == free_before + marked
        assert "Deleted 6 files" in notes(app)


async def test_failing_file_stays_marked_with_error(
    demo: DemoTree, service: CheckpointService, monkeypatch: object
) -> None:
    # Tests may run as root, which ignores permission bits; so a PermissionError is injected
    # by patching os.unlink for one path (the deleter unlinks relative to a directory fd).
    victim = (
        demo.root
        / "train_36766f85"
        / "checkpoints"
        / "checkpoint_4000"
        / "layer_14"
        / "checkpoint.safetensors"
    )
    real_unlink = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        where = Path(os.readlink(f"/proc/self/fd/{dir_fd}")) / path if dir_fd else Path(path)
        if where == victim:
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)  # type: ignore[attr-defined]
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_36766f85")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_2000")
        await pilot.press("space", "space", "d")
        await settle(app, pilot)
        await pilot.press("y")
        await settle(app, pilot)
        assert victim.exists()
        assert not (victim.parent.parent / "layer_7").exists()
        assert not (demo.root / "train_36766f85" / "checkpoints" / "checkpoint_2000").exists()
        assert len(app.marks.marked) == 1  # the failed file stays marked
        (fid,) = app.marks.marked
        assert "Permission denied" in app.model.errors[fid][1]
        assert "1 file could not be deleted and stay marked" in notes(app)
        assert "checkpoint_4000" in row_names(app)
        await goto(app, pilot, "checkpoint_4000")
        await pilot.press("right")
        await settle(app, pilot)
        row = next(n for n in app.model.rows if n.id == fid and n.kind == Kind.FILE)
        assert "Permission denied" in (row.info.error or "")  # type: ignore[union-attr]


async def test_marks_survive_sort_filter_collapse_and_rescan(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await goto(app, pilot, "train_9f1c2a0b")
        await pilot.press("right")
        await settle(app, pilot)
        await goto(app, pilot, "checkpoint_10000")
        await pilot.press("space")
        await settle(app, pilot)
        before = set(app.marks.marked)
        assert len(before) == 3
        await pilot.press("s")  # sort by size
        await settle(app, pilot)
        assert app.model.sort.value == "size" and app.marks.marked == before
        await pilot.press("slash", *"10000", "enter")
        await settle(app, pilot)
        assert "checkpoint_5000" not in row_names(app) and app.marks.marked == before
        await pilot.press("escape")
        await settle(app, pilot)
        assert "checkpoint_5000" in row_names(app)
        await goto(app, pilot, "train_9f1c2a0b")
        await pilot.press("left")
        await settle(app, pilot)
        await pilot.press("home", "r")  # top row: re-scan everything
        await settle(app, pilot)
        assert app.marks.marked == before
        assert "scanned" in status_text(app)
        await pilot.press("s", "s")
        await settle(app, pilot)
        assert app.model.sort.value == "step" and app.marks.marked == before


async def test_read_only_mode_turns_deletion_off(
    demo: DemoTree, service: CheckpointService
) -> None:
    app = make_app(demo, service, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "READ-ONLY" in status_text(app)
        assert app.check_action("delete", ()) is False
        assert " d Delete " not in screen_lines(app)[-1]
        await goto(app, pilot, "sae_gpt2_small_l8")
        await pilot.press("space", "d")
        await settle(app, pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert "--read-only" in notes(app)
        assert len(list((demo.root / "sae_gpt2_small_l8").rglob("*.safetensors"))) == 4


async def test_help_screen_and_palette_commands(demo: DemoTree, service: CheckpointService) -> None:
    app = make_app(demo, service)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await settle(app, pilot)
        assert isinstance(app.screen, HelpScreen)
        assert "keep newest N" in app.screen.query_one("#help-text", HangingText).plain
        await pilot.press("escape")
        await settle(app, pilot)
        assert not isinstance(app.screen, HelpScreen)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Delete marked…", "Keep newest N…", "Rescan", "Cycle sort"} <= titles


async def test_escape_cancels_a_running_deletion(demo: DemoTree) -> None:
    svc = await CheckpointService.open(str(demo.db_path), protection=Protection(newest_step=False))
    try:
        await svc.scan(str(demo.root))
        app = make_app(demo, svc)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await goto(app, pilot, "train_36766f85")
            real = svc.execute

            async def slow(plan, on_progress=None, cancel=None, **kw):  # type: ignore[no-untyped-def]
                app.action_stop()  # the user presses Escape as soon as it starts
                return await real(plan, on_progress, cancel, **kw)

            svc.execute = slow  # type: ignore[method-assign]
            await pilot.press("space")
            await settle(app, pilot)
            await pilot.press("d")
            await settle(app, pilot)
            await pilot.press("y")
            await settle(app, pilot)
            assert "Stopped. Deleted 0 files" in notes(app)
            left = list((demo.root / "train_36766f85").rglob("*.safetensors"))
            assert len(left) == 71  # stopped before the first file
    finally:
        await svc.close()


async def test_first_open_scans_with_progress_and_rows_appear(demo: DemoTree) -> None:
    """A root never indexed is scanned on open; the trainings appear and the index keeps them."""
    app = make_app(demo)  # no service given: the app opens the (empty) index itself
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        names = row_names(app)
        assert {"hf_finetune_llama", "sae_gpt2_small_l8", "train_36766f85"} <= set(names)
        assert app.ckpt_tree.node is not None and app.ckpt_tree.node.name == names[1]
        assert "scanned" in status_text(app) or "indexed" in status_text(app)
    svc = await CheckpointService.open(str(demo.db_path))
    try:
        info = await svc.get_root(str(demo.root))
        assert info is not None and info.scanned_at is not None
        assert len(await svc.trainings(info.id)) == 4
    finally:
        await svc.close()


async def test_open_file_needs_a_second_confirmation(
    demo: DemoTree, service: CheckpointService
) -> None:
    """A file another process holds open is only deleted after a second, explicit yes."""
    base = demo.root / "sae_gpt2_small_l8"
    held = base / "checkpoint_10000" / "sae.safetensors"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; f = open(sys.argv[1], 'rb'); sys.stdin.read()",
            str(held),
        ],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not any(  # until it holds the file open (its fd table says so)
            os.path.realpath(f"/proc/{holder.pid}/fd/{fd}") == str(held)
            for fd in os.listdir(f"/proc/{holder.pid}/fd")
        ):
            assert time.monotonic() < deadline, "the holder never opened the file"
            time.sleep(0.01)
        app = make_app(demo, service)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await goto(app, pilot, "sae_gpt2_small_l8")
            await pilot.press("right")
            await settle(app, pilot)
            await goto(app, pilot, "checkpoint_10000")
            await pilot.press("space", "space")  # 10000 (held open) and 20000
            await pilot.press("d")
            await settle(app, pilot)
            text = app.screen.query_one("#confirm-text", HangingText).plain
            assert "open in process" in text
            await pilot.press("y")  # the first yes: the dialog about the open file follows
            await settle(app, pilot)
            second = app.screen.query_one("#open-text", HangingText).plain
            assert "sae.safetensors" in second and "go either way" in second
            await pilot.press("n")  # keep the open file; the rest goes
            await settle(app, pilot)
            assert held.exists()
            assert not (base / "checkpoint_20000").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)

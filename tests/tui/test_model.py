"""The browser's state without an app: rows, marks, columns, text fitting, a deletion run."""

from __future__ import annotations

from rich.cells import cell_len

from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.marks import Marks
from ckpt_tui.tui.model import Kind, MarkState, Sort, TreeModel, natural_key
from ckpt_tui.tui.run import DeletionRun
from ckpt_tui.tui.widgets.columns import plan_columns
from ckpt_tui.types import (
    DeleteProgress,
    ExecuteResult,
    FileBrief,
    ItemResult,
    Outcome,
    Plan,
    PlannedFile,
    PlannedStep,
    RootInfo,
    StepInfo,
    TrainingInfo,
)


def training(tid: int, name: str, size: int, steps: int = 3) -> TrainingInfo:
    return TrainingInfo(tid, 1, name, f"/r/{name}", steps, steps, size, size, 1, steps, 10, 1)


def step(sid: int, tid: int, number: int, size: int = 100, **kw: object) -> StepInfo:
    return StepInfo(
        sid,
        tid,
        number,
        f"checkpoint_{number}",
        f"/r/t/checkpoint_{number}",
        1,
        1,
        size,
        size,
        number,
        False,
        False,
        **kw,  # type: ignore[arg-type]
    )


def model_with_steps() -> tuple[TreeModel, list[str]]:
    """Two trainings; the first expanded with steps 900, 10000 and 2000 (given out of order)."""
    m = TreeModel(RootInfo(1, "/r", None))
    changes: list[str] = []
    m.watch(lambda structure: changes.append("rows" if structure else "figures"))
    m.set_trainings([training(1, "b_small", 50), training(2, "a_big", 500)])
    t = m.training_nodes[1]
    m.set_steps(t, [step(10, 1, 10000, 30), step(11, 1, 900, 30), step(12, 1, 2000, 10)])
    m.expand(m.index_of(t))
    return m, changes


def test_rows_follow_expand_collapse_and_the_view_is_told() -> None:
    m, changes = model_with_steps()
    assert [n.name for n in m.rows] == [
        "/r",
        "a_big",
        "b_small",
        "checkpoint_900",
        "checkpoint_2000",
        "checkpoint_10000",
    ]  # numeric step order, never text order
    n = len(changes)
    m.collapse(m.index_of(m.training_nodes[1]))
    assert [n.name for n in m.rows] == ["/r", "a_big", "b_small"] and len(changes) == n + 1


def test_size_sort_orders_trainings_too_and_ties_by_step_number() -> None:
    m, _ = model_with_steps()
    assert m.cycle_sort() == Sort.SIZE
    names = [n.name for n in m.rows]
    assert names[1:3] == ["a_big", "b_small"]  # biggest first
    # 900 and 10000 have equal sizes: the step number breaks the tie, not the text
    assert names[3:] == ["checkpoint_900", "checkpoint_10000", "checkpoint_2000"]


def test_natural_order_puts_layer_2_before_layer_10() -> None:
    names = ["layer_10/x", "layer_2/x", "layer_1/x"]
    assert sorted(names, key=natural_key) == ["layer_1/x", "layer_2/x", "layer_10/x"]


def test_filter_names_marked_steps_it_hides() -> None:
    m, _ = model_with_steps()
    m.set_filter("2000")
    assert [n.name for n in m.rows][-1] == "checkpoint_2000"
    assert [s.name for s in m.filtered_out([10, 12])] == ["checkpoint_10000"]


def marks_for(m: TreeModel) -> Marks:
    marks = Marks()
    briefs = [FileBrief(100 + sid, sid, 1, 10) for sid in (10, 11, 12)]
    marks.load(briefs)
    return marks


def test_marking_a_training_skips_guarded_steps_and_unmarking_clears_all() -> None:
    m, _ = model_with_steps()
    marks = marks_for(m)
    heard: list[object] = []
    marks.watch(heard.append)
    marks.guard(10, "newest valid step")
    t = m.training_nodes[1]
    result = marks.toggle_group(t)
    assert result.marked == 2 and result.skipped_steps == (10,)
    assert marks.state(t) == MarkState.PARTIAL and heard
    marks.toggle(m.step_nodes[10])  # Space on the protected step marks it anyway
    assert marks.state(t) == MarkState.ALL
    result = marks.toggle_group(t)
    assert result.unmarked == 3 and not marks.marked


def test_pinning_drops_marks_and_invert_leaves_guarded_steps_alone() -> None:
    m, _ = model_with_steps()
    marks = marks_for(m)
    marks.toggle(m.step_nodes[11])
    marks.set_pinned(11, True)
    assert not marks.marked and marks.guarded[11] == "pinned"
    marks.invert(marks.ids_of(m.training_nodes[1]))
    assert marks.marked == {110, 112}


def test_columns_drop_bar_then_age_then_counts_before_names_are_cut() -> None:
    full = plan_columns(120, 30)
    assert full.bar and full.age and full.count and full.name >= 30
    no_bar = plan_columns(80, 40)
    assert not no_bar.bar and no_bar.age and no_bar.name >= 40
    no_age = plan_columns(80, 50)
    assert not no_age.bar and not no_age.age and no_age.count and no_age.name >= 50
    cut = plan_columns(40, 60)
    assert (cut.bar, cut.age, cut.count) == (0, 0, 0) and cut.size and cut.name < 60


def test_ellipsis_keeps_the_distinctive_end_and_counts_cells() -> None:
    assert fmt.ellipsize("checkpoint_498000", 10) == "che…498000"
    assert fmt.ellipsize("checkpoint_498000", 7) == "…498000"
    assert fmt.ellipsize("layer_14_residual/checkpoint.safetensors", 24).startswith(
        "layer_14_residual/…"
    )
    cut = fmt.ellipsize("训练_中文模型_l12", 11)
    assert cell_len(cut) <= 11 and cut.endswith("l12")
    assert cell_len(fmt.middle("/a/very/long/root/path/trainings", 16)) == 16


def test_counts_say_step_directories_not_directorys() -> None:
    """The deletion toast read 'removed 2 step directorys'."""
    assert fmt.count(2, "step directory") == "2 step directories"
    assert fmt.count(1, "step directory") == "1 step directory"
    assert fmt.count(2, "key") == "2 keys" and fmt.count(1_000, "file") == "1,000 files"


def test_units_are_binary_by_default_and_decimal_with_si() -> None:
    assert fmt.Units().size(257 * 2**20) == "257.0 MiB"
    assert fmt.Units(si=True).size(257_000_000) == "257.0 MB"


def planned(fid: int, sid: int, size: int, disk: int) -> PlannedFile:
    return PlannedFile(fid, ("t", f"s{sid}", f"f{fid}"), size, disk, fid, 0, 1)


def test_a_run_buffers_progress_and_says_what_stays_marked() -> None:
    steps = (
        PlannedStep(
            1,
            "t",
            1,
            1,
            "/r/t/s1",
            ("t", "s1"),
            (planned(10, 1, 100, 8), planned(11, 1, 100, 8)),
            True,
        ),
        PlannedStep(2, "t", 1, 2, "/r/t/s2", ("t", "s2"), (planned(20, 2, 50, 4),), True),
    )
    plan = Plan(1, "/r", steps)
    now = [0.0]
    run = DeletionRun(plan, frozenset({10, 11, 20, 99}), clock=lambda: now[0])
    run.on_progress(
        DeleteProgress(ItemResult(10, 1, "/r/t/s1/f10", Outcome.DELETED), 1, 3, 100, 250)
    )
    run.on_progress(
        DeleteProgress(
            ItemResult(11, 1, "/r/t/s1/f11", Outcome.FAILED, error="EACCES"), 2, 3, 100, 250
        )
    )
    batch = run.take()
    assert [g.file_id for g in batch.gone] == [10] and batch.gone[0].freed_disk == 8
    assert [f.file_id for f in batch.failed] == [11] and not run.take()
    now[0] = 2.0
    assert run.label(fmt.Units()).startswith("Deleting 2/3 files · 100 Bytes/250 Bytes")
    assert run.cancel() and not run.cancel() and run.cancelling
    result = ExecuteResult(
        (
            ItemResult(10, 1, "/r/t/s1/f10", Outcome.DELETED, 100),
            ItemResult(11, 1, "/r/t/s1/f11", Outcome.FAILED, error="EACCES"),
            ItemResult(20, 2, "/r/t/s2/f20", Outcome.SKIPPED, error="cancelled"),
        ),
        (),
        (),
        100,
        cancelled=True,
    )
    # failed and not reached stay marked; 99 (protected, not in the plan) does not linger
    assert run.remaining_marks(result) == {11, 20}
    words = " | ".join(n.message for n in run.notices(result, fmt.Units(), str))
    assert "Stopped. Deleted 1 file, freed 8 Bytes on disk (100 Bytes apparent)" in words
    assert "1 file could not be deleted and stay marked" in words


def test_a_read_only_filesystem_says_what_would_help() -> None:
    run = DeletionRun(Plan(1, "/r", ()), frozenset())
    result = ExecuteResult(
        (ItemResult(1, 1, "/r/a", Outcome.SKIPPED),),
        (),
        (),
        0,
        stopped="stopped: /r/a: Read-only file system; nothing after it was touched, "
        "run again to resume",
    )
    words = " | ".join(n.message for n in run.notices(result, fmt.Units(), str))
    assert "remount it read-write" in words and "1 file still marked" in words
    assert "run again to resume" not in words


def test_kinds_are_depths() -> None:
    assert [k.value for k in Kind] == [0, 1, 2, 3]

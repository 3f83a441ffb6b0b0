"""Property tests: the layout parser never maps a record outside its root; the retention
planner never plans the newest step, a pinned step, or a file outside the training.
(Header-reader fuzzing lives in tests/test_safetensors_header.py.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_tui import layout, retention
from ckpt_tui.service import CheckpointService

from .conftest import run_cli, write_ckpt

# Components built from the characters that matter: separators, dots, NUL, and normal text.
ATOMS = st.sampled_from(
    [
        "",
        ".",
        "..",
        "/",
        "\0",
        "layer_7",
        "checkpoint_5",
        "a",
        "..a",
        "checkpoint-12",
        "x.safetensors",
        "/etc",
        "\\",
        " ",
        "~",
    ]
)
RECORDS = st.one_of(
    st.text(max_size=40),
    st.lists(ATOMS, max_size=8).map("/".join),
    st.lists(ATOMS, max_size=8).map("".join),
)
BAD = {"", ".", "..", "/"}


def _contained(parts: tuple[str, ...]) -> None:
    for p in parts:
        assert p not in BAD and "/" not in p and "\0" not in p, parts
    base = "/srv/root"
    joined = os.path.normpath(os.path.join(base, *parts))
    assert joined.startswith(base + "/") and os.path.commonpath([base, joined]) == base


@given(RECORDS, RECORDS)
@settings(max_examples=600, deadline=None)
def test_accepted_file_records_stay_under_the_root(step_rel: str, file_rel: str) -> None:
    parts = layout.validate_file_record(step_rel, file_rel)
    if parts is None:
        return
    _contained(parts)
    step = layout.validate_step_record(step_rel)
    assert step is not None and parts[: len(step)] == step and len(parts) > len(step)


@given(RECORDS)
@settings(max_examples=600, deadline=None)
def test_split_relpath_never_yields_unsafe_components(rel: str) -> None:
    parts = layout.split_relpath(rel)
    if parts is not None:
        _contained(parts)
        assert "/".join(parts) == rel


STEP_FACTS = st.lists(
    st.tuples(st.integers(0, 50), st.booleans(), st.integers(0, 10**12)),
    min_size=1,
    max_size=25,
    unique_by=lambda f: f[0],
)  # ties at the newest number: see the xfail below


@given(STEP_FACTS, st.integers(1, 6))
@settings(max_examples=500, deadline=None)
def test_keep_newest_never_plans_newest_or_pinned(
    facts: list[tuple[int, bool, int]], n: int
) -> None:
    steps = [
        retention.StepFacts(i, step, pinned, mtime) for i, (step, pinned, mtime) in enumerate(facts)
    ]
    decision = retention.keep_newest(steps, n)
    planned = set(decision.delete)
    newest = max(s.step for s in steps)
    assert not [s for s in steps if s.id in planned and s.step == newest], "newest step planned"
    assert not [s for s in steps if s.id in planned and s.pinned], "pinned step planned"
    assert planned.isdisjoint(decision.keep)
    assert planned | set(decision.keep) == {s.id for s in steps}


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 3000), st.booleans()), min_size=1, max_size=10
    ),
    st.integers(1, 3),
)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_plan_retention_on_a_real_tree(steps: list[tuple[int, int, bool]], keep: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "root"
        made: dict[tuple[int, int], bool] = {}
        for t, step, pinned in steps:
            made[(t, step)] = made.get((t, step), False) or pinned
            d = root / f"train_{t}" / "checkpoints" / f"checkpoint_{step}"
            write_ckpt(d / "layer_0" / "checkpoint.safetensors")
        # A sibling outside every training, that no plan may touch.
        write_ckpt(root / "stray" / "checkpoint.safetensors")
        async with await CheckpointService.open(str(base / "db.sqlite3")) as svc:
            await svc.scan(str(root))
            info = await svc.get_root(str(root))
            assert info is not None
            for t_id in {t for t, _ in made}:
                pins = [
                    s.id
                    for tr in await svc.trainings(info.id)
                    if tr.name == f"train_{t_id}"
                    for s in await svc.steps(tr.id)
                    if made[(t_id, s.step)]
                ]
                await svc.set_pinned(pins, True)
            plan = await svc.plan_retention(info.id, keep, force=True)
        newest = {t: max(s for tt, s in made if tt == t) for t, _ in made}
        for s in plan.steps:
            t = int(s.training.split("_")[1])
            assert s.step != newest[t], "newest step planned"
            assert not made[(t, s.step)], "pinned step planned"
            for f in s.files:
                assert f.relparts[:2] == (s.training, "checkpoints"), f.relparts
                assert (
                    (root.joinpath(*f.relparts))
                    .resolve()
                    .is_relative_to((root / s.training).resolve())
                )


def test_two_directories_for_the_newest_step_number_are_both_kept(tmp_path: Path) -> None:
    """Found by hypothesis: two step dirs with the newest number; --force deleted one."""
    root, db = tmp_path / "root", tmp_path / "index.sqlite3"
    ck = root / "train_0" / "checkpoints"
    newest = [
        ck / "checkpoint_300" / "layer_0" / "checkpoint.safetensors",
        ck / "checkpoint-300" / "layer_0" / "checkpoint.safetensors",
    ]
    for p in [ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors", *newest]:
        write_ckpt(p)
    proc = run_cli("prune", root, "--keep", "1", "--yes", "--force", "--json", "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert all(p.exists() for p in newest), "a directory of the newest step was deleted"

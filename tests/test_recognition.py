"""Steps recognised by content, not by a numeric name; which files belong to a step.

Real trees in tmp_path (safetensors written by the library), a real index, and what a user
sees: the trainings and steps listed (`ckpt-tui ls --json`, CheckpointService) and the role
each file row carries in the index (foreign files are shown and kept).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from ckpt_tui.cli import main
from ckpt_tui.db import ROLE_ARTIFACT, ROLE_FOREIGN, FileRow, Step, Training
from ckpt_tui.service import CheckpointService
from tests.conftest import make_training, write_checkpoint


@pytest.fixture
def db_path(any_db: str) -> str:
    """Every test here runs on SQLite and, when configured, on PostgreSQL."""
    return any_db


async def _scan(svc: CheckpointService, root: Path) -> int:
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    return info.id


async def _trainings(svc: CheckpointService, root: Path) -> dict[str, tuple[str, list[int]]]:
    """After a scan of ``root``: {training relpath: (name, step numbers)} as the index holds
    them (relpath: the folder holding the steps, relative to the root)."""
    root_id = await _scan(svc, root)
    async with svc.db.sessions() as session:
        q = (
            select(Training.relpath, Training.name, Step.step)
            .join(Step, Step.training_id == Training.id)
            .where(Training.root_id == root_id)
            .order_by(Step.step)
        )
        out: dict[str, tuple[str, list[int]]] = {}
        for rel, name, step in (await session.execute(q)).all():
            out.setdefault(rel, (name, []))[1].append(step)
    # and the service lists the same steps
    listed = []
    for t in await svc.trainings(root_id):
        listed += [s.step for s in await svc.steps(t.id)]
    assert sorted(listed) == sorted(n for _, steps in out.values() for n in steps)
    return out


async def _index(svc: CheckpointService) -> dict[str, tuple[str, str]]:
    """{step relpath: (training relpath, training name)} straight from the index rows."""
    async with svc.db.sessions() as session:
        q = select(Step.relpath, Training.relpath, Training.name).join(
            Training, Training.id == Step.training_id
        )
        return {s: (t, n) for s, t, n in (await session.execute(q)).all()}


async def _roles(svc: CheckpointService) -> dict[str, str]:
    """{step relpath/file relpath: role} of every file row in the index."""
    async with svc.db.sessions() as session:
        q = select(Step.relpath, FileRow.relpath, FileRow.role).join(
            Step, Step.id == FileRow.step_id
        )
        return {f"{s}/{f}": r for s, f, r in (await session.execute(q)).all()}


async def _scan_problems(svc: CheckpointService) -> dict[str, list[str]]:
    async with svc.db.sessions() as session:
        q = select(Step.relpath, Step.problems)
        return {s: list(p or []) for s, p in (await session.execute(q)).all()}


def _saelens_step(d: Path, n: int) -> None:
    """What SAELens's save_checkpoint writes: weights, sparsity, cfg, trainer state."""
    write_checkpoint(d / "sae_weights.safetensors", n)
    write_checkpoint(d / "sparsity.safetensors", n)
    (d / "cfg.json").write_text(json.dumps({"d_in": 768, "d_sae": 24576, "model_name": "gpt2"}))
    (d / "runner_cfg.json").write_text("{}")
    (d / "trainer_state.pt").write_bytes(b"\0" * 64)
    (d / "activation_scaler.json").write_text("{}")


def _saelens_run(run: Path) -> None:
    _saelens_step(run / "4096000", 1)
    _saelens_step(run / "8192000", 2)
    _saelens_step(run / "final_12288000", 3)


async def _ls(root: Path, db: str) -> dict[str, list[int]]:
    """`ckpt-tui ls ROOT --json`: {training name: step numbers}. (The CLI runs its own
    event loop: in a thread, beside this test's.)"""

    def run() -> str:
        result = CliRunner().invoke(main, ["ls", str(root), "--json", "--db", db])
        assert result.exit_code == 0, result.output
        return result.stdout

    doc = json.loads(await asyncio.to_thread(run))
    return {t["name"]: [s["step"] for s in t["steps"]] for t in doc["trainings"]}


# -- 2. a step is recognised by its content -------------------------------------------------


async def test_evaluation_output_under_checkpoints_is_not_a_step(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    make_training(root, "exp", [100, 200], layers=("layer_7",))
    results = root / "exp" / "checkpoints" / "eval" / "1000" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text('{"loss": 0.1}')
    assert await _trainings(svc, root) == {"exp/checkpoints": ("exp", [100, 200])}
    assert not any("eval" in rel for rel in await _index(svc))


async def test_a_sweep_folder_is_walked_into_not_taken_for_a_step(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    sweep = root / "checkpoints" / "sweep" / "1"
    for step in (100, 200):
        write_checkpoint(sweep / f"checkpoint_{step}" / "layer_7" / "checkpoint.safetensors", step)
    trainings = await _trainings(svc, root)
    assert trainings == {"checkpoints/sweep/1": ("checkpoints/sweep/1", [100, 200])}


@pytest.mark.parametrize(
    ("root_rel", "expected"),
    [
        ("", {"proj/checkpoints/3kx8f2ab": "proj/checkpoints/3kx8f2ab"}),
        ("proj/checkpoints", {"3kx8f2ab": "3kx8f2ab"}),
        ("proj/checkpoints/3kx8f2ab", {"": "3kx8f2ab"}),
    ],
    ids=["above-checkpoints", "at-checkpoints", "at-run-folder"],
)
async def test_saelens_run_is_found_whatever_the_root(
    tmp_path: Path, db_path: str, svc, root_rel: str, expected: dict[str, str]
) -> None:
    base = tmp_path / "root"
    _saelens_run(base / "proj" / "checkpoints" / "3kx8f2ab")
    root = base / root_rel if root_rel else base
    samples = [4096000, 8192000, 12288000]
    assert await _trainings(svc, root) == {rel: (name, samples) for rel, name in expected.items()}
    assert await _ls(root, db_path) == {name: samples for name in expected.values()}
    steps = [
        s
        for t in await svc.trainings((await svc.get_root(str(root))).id)  # type: ignore[union-attr]
        for s in await svc.steps(t.id)
    ]
    assert {s.unit for s in steps} == {"samples"}
    assert not any(s.incomplete for s in steps), [s.problems for s in steps]


async def test_saelens_run_is_found_whatever_the_checkpoint_path_is_called(
    tmp_path: Path, db_path: str, svc
) -> None:
    root = tmp_path / "root"
    _saelens_run(root / "proj" / "my_ckpts" / "3kx8f2ab")
    assert await _ls(root, db_path) == {"proj/my_ckpts/3kx8f2ab": [4096000, 8192000, 12288000]}
    roles = await _roles(svc)
    assert roles["proj/my_ckpts/3kx8f2ab/4096000/sae_weights.safetensors"] == ROLE_ARTIFACT
    assert {r for r in roles.values()} == {ROLE_ARTIFACT}, roles


async def test_numeric_folder_without_sae_weights_is_left_alone(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    run = root / "checkpoints" / "3kx8f2ab"
    _saelens_step(run / "4096000", 1)
    (run / "8192000").mkdir()  # a mkdir, no artifact: not a SAELens step
    write_checkpoint(root / "data" / "2024" / "features.safetensors", 1)  # not a SAELens step
    assert await _trainings(svc, root) == {
        "checkpoints/3kx8f2ab": ("checkpoints/3kx8f2ab", [4096000])
    }


async def test_checkpoint_folder_holding_step_folders_is_walked_into(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    outer = root / "runs" / "checkpoint_1"  # a folder of runs that happens to look like a step
    write_checkpoint(outer / "checkpoint_100" / "layer_7" / "checkpoint.safetensors", 100)
    _saelens_step(outer / "sae" / "2048", 1)
    trainings = await _trainings(svc, root)
    assert trainings == {
        "runs/checkpoint_1": ("runs/checkpoint_1", [100]),
        "runs/checkpoint_1/sae": ("runs/checkpoint_1/sae", [2048]),
    }


async def test_checkpoints_folder_as_root_names_the_training_above_it(tmp_path: Path, svc) -> None:
    base = make_training(tmp_path / "root", "train_36766f85", [1000, 2000], layers=("layer_7",))
    assert await _trainings(svc, base) == {"": ("train_36766f85", [1000, 2000])}


# -- 5. trainings: identity by path ------------------------------------------------------------


async def test_two_runs_in_one_folder_are_two_trainings(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    make_training(root, "exp", [1, 2], layers=("layer_7",))  # exp/checkpoints/checkpoint_*
    make_training(root, "exp", [10, 20], layers=("layer_7",), checkpoints_dir=False)
    assert await _trainings(svc, root) == {
        "exp/checkpoints": ("exp", [1, 2]),
        "exp": ("exp", [10, 20]),
    }


async def test_trainings_are_named_by_their_path_under_the_root(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    make_training(root / "alice", "exp1", [1], layers=("layer_7",))
    make_training(root / "bob", "exp1", [2], layers=("layer_7",))
    assert await _trainings(svc, root) == {
        "alice/exp1/checkpoints": ("alice/exp1", [1]),
        "bob/exp1/checkpoints": ("bob/exp1", [2]),
    }
    names = {rel: name for rel, name in (await _index(svc)).values()}
    assert names == {"alice/exp1/checkpoints": "alice/exp1", "bob/exp1/checkpoints": "bob/exp1"}


async def test_scanning_one_training_leaves_a_nested_family_alone(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    make_training(root, "exp", [1, 2], layers=("layer_7",))
    make_training(root, "exp", [10, 20], layers=("layer_7",), checkpoints_dir=False)
    root_id = await _scan(svc, root)
    async with svc.db.sessions() as session:
        outer = (
            await session.execute(select(Training.id).where(Training.relpath == "exp"))
        ).scalar_one()
    write_checkpoint(root / "exp" / "checkpoint_30" / "layer_7" / "checkpoint.safetensors", 30)
    result = await svc.scan(str(root), training_id=outer)
    assert result.steps == 3  # only exp/checkpoint_*: exp/checkpoints/ is another training
    assert await _trainings(svc, root) == {
        "exp": ("exp", [10, 20, 30]),
        "exp/checkpoints": ("exp", [1, 2]),
    }
    assert root_id == (await svc.get_root(str(root))).id  # type: ignore[union-attr]


# -- 3. which files belong to a step -----------------------------------------------------------


async def test_files_a_layout_does_not_name_are_stored_as_foreign(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "t", [100, 200], layers=("layer_1", "layer_7"))
    (ck / "checkpoint_100" / "notes.txt").write_text("lr too high")
    (ck / "checkpoint_100" / "layer_1" / "README.md").write_text("layer 1")
    git = ck / "checkpoint_200" / "analysis" / ".git"
    git.mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (ck / "checkpoint_200" / "analysis" / "plot.py").write_text("print(1)\n")
    single = root / "single" / "checkpoint_5"
    write_checkpoint(single / "sae.safetensors", 5)
    (single / "notes.txt").write_text("x")
    hf = root / "hf_run" / "checkpoint-500"
    write_checkpoint(hf / "model.safetensors", 500)
    for name in ("README.md", "optimizer.pt", "scheduler.pt", "rng_state.pth", "latest"):
        (hf / name).write_bytes(b"x" * 10)
    (hf / "trainer_state.json").write_text("{}")
    (hf / "adapter_config.json").write_text("{}")
    (hf / "global_step500").mkdir()
    (hf / "global_step500" / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)
    (hf / "eval_notes.txt").write_text("x")
    (hf / "model.safetensors.tmp").write_bytes(b"x")
    await _scan(svc, root)
    roles = await _roles(svc)
    s100, s200 = "t/checkpoints/checkpoint_100", "t/checkpoints/checkpoint_200"
    assert roles[f"{s100}/notes.txt"] == ROLE_FOREIGN
    assert roles[f"{s100}/layer_1/README.md"] == ROLE_FOREIGN
    assert roles[f"{s200}/analysis/.git/HEAD"] == ROLE_FOREIGN
    assert roles[f"{s200}/analysis/plot.py"] == ROLE_FOREIGN
    for step in (s100, s200):
        for layer in ("layer_1", "layer_7"):
            assert roles[f"{step}/{layer}/checkpoint.safetensors"] == ROLE_ARTIFACT
    assert roles["single/checkpoint_5/sae.safetensors"] == ROLE_ARTIFACT
    assert roles["single/checkpoint_5/notes.txt"] == ROLE_FOREIGN
    h = "hf_run/checkpoint-500"
    for name in (
        "README.md",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "latest",
        "trainer_state.json",
        "adapter_config.json",
        "model.safetensors",
        "global_step500/mp_rank_00_model_states.pt",
    ):
        assert roles[f"{h}/{name}"] == ROLE_ARTIFACT, name
    assert roles[f"{h}/eval_notes.txt"] == ROLE_FOREIGN
    assert roles[f"{h}/model.safetensors.tmp"] == ROLE_FOREIGN
    # foreign files are listed with their step (shown, and they keep their folders alive)
    root_id = (await svc.get_root(str(root))).id  # type: ignore[union-attr]
    t = next(t for t in await svc.trainings(root_id) if t.name == "t")
    step = (await svc.steps(t.id))[0]
    assert "notes.txt" in {f.relpath for f in await svc.files(step.id)}


async def test_a_step_with_only_foreign_files_is_kept_with_a_problem(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "t", [100], layers=("layer_7",))
    (ck / "checkpoint_200").mkdir()
    (ck / "checkpoint_200" / "notes.txt").write_text("moved the weights to S3")
    assert await _trainings(svc, root) == {"t/checkpoints": ("t", [100, 200])}
    problems = await _scan_problems(svc)
    assert problems["t/checkpoints/checkpoint_200"] == ["no checkpoint files"]
    assert problems["t/checkpoints/checkpoint_100"] == []


async def test_rescan_updates_a_role_when_the_layout_changes(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    step = root / "t" / "checkpoint_5"
    write_checkpoint(step / "sae.safetensors", 5)  # single layer: *.safetensors are artifacts
    await _scan(svc, root)
    assert (await _roles(svc))["t/checkpoint_5/sae.safetensors"] == ROLE_ARTIFACT
    # a layer folder appears: now a miStudio step, whose top-level files are not artifacts
    write_checkpoint(step / "layer_7" / "checkpoint.safetensors", 5)
    second = await svc.scan(str(root))
    assert second.headers_read == 1  # the unchanged file's header is not read again
    roles = await _roles(svc)
    assert roles["t/checkpoint_5/sae.safetensors"] == ROLE_FOREIGN
    assert roles["t/checkpoint_5/layer_7/checkpoint.safetensors"] == ROLE_ARTIFACT
    # and back
    (step / "layer_7" / "checkpoint.safetensors").unlink()
    (step / "layer_7").rmdir()
    await svc.scan(str(root))
    assert await _roles(svc) == {"t/checkpoint_5/sae.safetensors": ROLE_ARTIFACT}


# -- 8. debris of an older cleaner -------------------------------------------------------------


async def test_empty_step_and_layer_folders_are_steps_shown_as_empty(tmp_path: Path, svc) -> None:
    """The note's "before": empty checkpoint_* folders, some with empty layer_* inside."""
    root = tmp_path / "root"
    ck = make_training(root, "train_36766f85", [498000], layers=("layer_7", "layer_14"))
    for n in range(1000, 6000, 1000):
        (ck / f"checkpoint_{n}").mkdir()
    for n in (6000, 7000):
        (ck / f"checkpoint_{n}" / "layer_7").mkdir(parents=True)
        (ck / f"checkpoint_{n}" / "layer_14_residual").mkdir()
    root_id = await _scan(svc, root)
    (t,) = await svc.trainings(root_id)
    steps = {s.step: s for s in await svc.steps(t.id)}
    assert sorted(steps) == [1000, 2000, 3000, 4000, 5000, 6000, 7000, 498000]
    for n in range(1000, 8000, 1000):
        assert steps[n].file_count == 0
        assert "empty" in steps[n].problems
    assert "empty" not in steps[498000].problems
    problems = await _scan_problems(svc)
    assert problems["train_36766f85/checkpoints/checkpoint_6000"] == ["empty"]
    assert problems["train_36766f85/checkpoints/checkpoint_498000"] == []

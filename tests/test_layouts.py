"""Layouts beyond miStudio: SAELens sample-count steps and sharded HF checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckpt_tui.service import CheckpointService
from tests.conftest import write_checkpoint


@pytest.fixture
def db_path(any_db: str) -> str:
    """Every test here runs on SQLite and, when configured, on PostgreSQL."""
    return any_db


async def _steps_by_name(svc: CheckpointService, root: Path) -> dict[str, dict[str, object]]:
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    out: dict[str, dict[str, object]] = {}
    for t in await svc.trainings(info.id):
        for s in await svc.steps(t.id):
            out[f"{t.name}/{s.dirname}"] = {"info": s, "training": t}
    return out


def _saelens_step(run: Path, name: str, *, weights: bool = True) -> Path:
    d = run / name
    if weights:
        write_checkpoint(d / "sae_weights.safetensors", 1)
    write_checkpoint(d / "sparsity.safetensors", 1)
    (d / "cfg.json").write_text(
        json.dumps(
            {
                "d_in": 768,
                "d_sae": 24576,
                "hook_name": "blocks.8.hook_resid_pre",
                "model_name": "gpt2-small",
                "lr": 0.0003,
            }
        )
    )
    (d / "trainer_state.pt").write_bytes(b"\0" * 64)
    return d


async def test_saelens_steps_are_sample_counts_with_cfg_summary(tmp_path: Path, svc) -> None:
    run = tmp_path / "root" / "sae_runs" / "checkpoints" / "3kx8f2ab"
    _saelens_step(run, "4096000")
    _saelens_step(run, "12288000", weights=False)
    _saelens_step(run, "final_20480000")
    steps = await _steps_by_name(svc, tmp_path / "root")
    # the training is named by its folder relative to the root (the run folder)
    assert set(steps) == {
        "sae_runs/checkpoints/3kx8f2ab/4096000",
        "sae_runs/checkpoints/3kx8f2ab/12288000",
        "sae_runs/checkpoints/3kx8f2ab/final_20480000",
    }
    info = steps["sae_runs/checkpoints/3kx8f2ab/4096000"]["info"]
    assert info.unit == "samples" and info.step == 4096000 and not info.incomplete
    assert dict(info.config) == {
        "d_in": "768",
        "d_sae": "24576",
        "model_name": "gpt2-small",
        "hook_name": "blocks.8.hook_resid_pre",
    }
    missing = steps["sae_runs/checkpoints/3kx8f2ab/12288000"]["info"]
    assert missing.incomplete and "no sae_weights.safetensors" in missing.problems
    final = steps["sae_runs/checkpoints/3kx8f2ab/final_20480000"]["info"]
    assert final.step == 20480000 and final.unit == "samples"
    # sorted numerically by sample count
    t = steps["sae_runs/checkpoints/3kx8f2ab/4096000"]["training"]
    assert [s.dirname for s in await svc.steps(t.id)] == ["4096000", "12288000", "final_20480000"]


async def test_numeric_dirs_elsewhere_are_not_steps(tmp_path: Path, svc) -> None:
    root = tmp_path / "root"
    write_checkpoint(root / "data" / "2024" / "x.safetensors", 1)
    steps = await _steps_by_name(svc, root)
    assert steps == {}


def _shard_step(d: Path, n: int, present: list[int]) -> None:
    names = [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    weight_map = {f"layer.{i}.weight": names[i % n] for i in range(n * 2)}
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map})
    )
    for k in present:
        write_checkpoint(d / names[k - 1], k)


async def test_sharded_step_missing_a_shard_is_incomplete(tmp_path: Path, svc) -> None:
    root = tmp_path / "root" / "hf_run"
    _shard_step(root / "checkpoint-100", 3, [1, 2, 3])
    _shard_step(root / "checkpoint-200", 3, [1, 3])
    steps = await _steps_by_name(svc, tmp_path / "root")
    whole = steps["hf_run/checkpoint-100"]["info"]
    torn = steps["hf_run/checkpoint-200"]["info"]
    assert not whole.incomplete
    assert torn.incomplete
    assert torn.problems == (
        "missing shard model-00002-of-00003.safetensors (named in model.safetensors.index.json)",
    )


async def test_rescan_notices_a_shard_arriving(tmp_path: Path, svc) -> None:
    root = tmp_path / "root" / "hf_run"
    _shard_step(root / "checkpoint-200", 2, [1])
    steps = await _steps_by_name(svc, tmp_path / "root")
    assert steps["hf_run/checkpoint-200"]["info"].incomplete
    write_checkpoint(root / "checkpoint-200" / "model-00002-of-00002.safetensors", 2)
    steps = await _steps_by_name(svc, tmp_path / "root")
    assert not steps["hf_run/checkpoint-200"]["info"].incomplete


async def test_missing_layer_and_truncated_file_flag_the_step(tmp_path: Path, svc) -> None:
    from tests.conftest import make_training

    root = tmp_path / "root"
    base = make_training(root, "t", [1, 2, 3])
    (base / "checkpoint_2" / "layer_18" / "checkpoint.safetensors").unlink()
    f = base / "checkpoint_3" / "layer_7" / "checkpoint.safetensors"
    f.write_bytes(f.read_bytes()[:-10])  # half-written
    steps = await _steps_by_name(svc, root)
    assert not steps["t/checkpoint_1"]["info"].incomplete
    assert steps["t/checkpoint_2"]["info"].problems == ("2 of 3 layers",)
    assert steps["t/checkpoint_3"]["info"].problems == ("1 file(s) not valid safetensors",)


async def test_symlinked_step_directory_is_flagged_not_followed(tmp_path: Path, svc) -> None:
    import os

    victim = tmp_path / "victim" / "checkpoint_5"
    write_checkpoint(victim / "layer_0" / "checkpoint.safetensors", 5)
    root = tmp_path / "root"
    write_checkpoint(root / "t" / "checkpoints" / "checkpoint_1" / "layer_0" / "c.safetensors", 1)
    os.symlink(victim, root / "t" / "checkpoints" / "checkpoint_5")
    result = await svc.scan(str(root))
    assert result.steps == 1
    assert any("checkpoint_5 is a symlink" in n for n in result.notes)

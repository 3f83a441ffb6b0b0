"""Layouts beyond miStudio: SAELens sample-count steps and sharded HF checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckpt_tui import layout
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


# -- pure rules: which names are steps, which files are artifacts ------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("checkpoint_498000", (498000, "step")),
        ("checkpoint-500", (500, "step")),
        ("4096000", (4096000, "samples")),
        ("final_20480000", (20480000, "samples")),
        ("checkpoints", None),
        ("checkpoint_", None),
        ("tmp-checkpoint-500", None),  # HF Trainer's folder while it saves
        ("final", None),
        ("global_step500", None),
        ("layer_7", None),
    ],
)
def test_step_candidate_names(name: str, expected: tuple[int, str] | None) -> None:
    assert layout.step_candidate(name) == expected


def test_saelens_content_decides_a_numeric_folder() -> None:
    assert layout.is_saelens_step({"sae_weights.safetensors"})
    assert layout.is_saelens_step({"cfg.json", "sparsity.safetensors"})
    assert not layout.is_saelens_step({"cfg.json"})
    assert not layout.is_saelens_step({"results.json", "eval.safetensors"})
    assert not layout.is_saelens_step(set())


def test_step_layout_from_name_and_layer_folders() -> None:
    assert layout.step_layout("checkpoint_5", True) == layout.LAYOUT_MISTUDIO
    assert layout.step_layout("checkpoint-5", True) == layout.LAYOUT_MISTUDIO
    assert layout.step_layout("checkpoint_5", False) == layout.LAYOUT_SINGLE
    assert layout.step_layout("checkpoint-5", False) == layout.LAYOUT_HF
    assert layout.step_layout("final_5", False) == layout.LAYOUT_SAELENS


A, F = layout.ROLE_ARTIFACT, layout.ROLE_FOREIGN


@pytest.mark.parametrize(
    ("kind", "relpath", "role"),
    [
        (layout.LAYOUT_MISTUDIO, "layer_7/checkpoint.safetensors", A),
        (layout.LAYOUT_MISTUDIO, "layer_14_residual/checkpoint.safetensors", A),
        (layout.LAYOUT_MISTUDIO, "layer_7/checkpoint.safetensors.tmp", F),
        (layout.LAYOUT_MISTUDIO, "layer_7/other.safetensors", F),
        (layout.LAYOUT_MISTUDIO, "layer_1/README.md", F),
        (layout.LAYOUT_MISTUDIO, "notes.txt", F),
        (layout.LAYOUT_MISTUDIO, "checkpoint.safetensors", F),
        (layout.LAYOUT_MISTUDIO, "analysis/.git/HEAD", F),
        (layout.LAYOUT_MISTUDIO, "extra/layer_7/checkpoint.safetensors", F),
        (layout.LAYOUT_SINGLE, "sae.safetensors", A),
        (layout.LAYOUT_SINGLE, "notes.txt", F),
        (layout.LAYOUT_SINGLE, "sub/sae.safetensors", F),
        (layout.LAYOUT_SINGLE, "sae.safetensors.tmp", F),
        (layout.LAYOUT_SINGLE, ".sae.safetensors.swp", F),
        (layout.LAYOUT_SAELENS, "sae_weights.safetensors", A),
        (layout.LAYOUT_SAELENS, "sparsity.safetensors", A),
        (layout.LAYOUT_SAELENS, "cfg.json", A),
        (layout.LAYOUT_SAELENS, "runner_cfg.json", A),
        (layout.LAYOUT_SAELENS, "trainer_state.pt", A),
        (layout.LAYOUT_SAELENS, "activation_scaler.json", A),
        (layout.LAYOUT_SAELENS, "activations_store_state.safetensors", A),
        (layout.LAYOUT_SAELENS, "results.json", F),
        (layout.LAYOUT_SAELENS, "other.safetensors", F),
        (layout.LAYOUT_HF, "model.safetensors", A),
        (layout.LAYOUT_HF, "model-00001-of-00003.safetensors", A),
        (layout.LAYOUT_HF, "model.safetensors.index.json", A),
        (layout.LAYOUT_HF, "pytorch_model.bin", A),
        (layout.LAYOUT_HF, "pytorch_model-00002-of-00002.bin", A),
        (layout.LAYOUT_HF, "pytorch_model.bin.index.json", A),
        (layout.LAYOUT_HF, "pytorch_model_fsdp.bin", A),
        (layout.LAYOUT_HF, "pytorch_model_fsdp_0/__0_0.distcp", A),
        (layout.LAYOUT_HF, "pytorch_model_fsdp_0/.metadata", A),
        (layout.LAYOUT_HF, "optimizer_0/__1_0.distcp", A),
        (layout.LAYOUT_HF, "optimizer.pt", A),
        (layout.LAYOUT_HF, "optimizer.bin", A),
        (layout.LAYOUT_HF, "scheduler.pt", A),
        (layout.LAYOUT_HF, "scaler.pt", A),
        (layout.LAYOUT_HF, "rng_state.pth", A),
        (layout.LAYOUT_HF, "rng_state_3.pth", A),
        (layout.LAYOUT_HF, "trainer_state.json", A),
        (layout.LAYOUT_HF, "training_args.bin", A),
        (layout.LAYOUT_HF, "config.json", A),
        (layout.LAYOUT_HF, "generation_config.json", A),
        (layout.LAYOUT_HF, "tokenizer.json", A),
        (layout.LAYOUT_HF, "tokenizer_config.json", A),
        (layout.LAYOUT_HF, "special_tokens_map.json", A),
        (layout.LAYOUT_HF, "vocab.json", A),
        (layout.LAYOUT_HF, "merges.txt", A),
        (layout.LAYOUT_HF, "tokenizer.model", A),
        (layout.LAYOUT_HF, "chat_template.jinja", A),
        (layout.LAYOUT_HF, "additional_chat_templates/tool_use.jinja", A),
        (layout.LAYOUT_HF, "adapter_model.safetensors", A),
        (layout.LAYOUT_HF, "adapter_config.json", A),
        (layout.LAYOUT_HF, "my_adapter/adapter_model.safetensors", A),
        (layout.LAYOUT_HF, "README.md", A),
        (layout.LAYOUT_HF, "latest", A),
        (layout.LAYOUT_HF, "zero_to_fp32.py", A),
        (layout.LAYOUT_HF, "modeling_custom.py", A),
        (layout.LAYOUT_HF, "global_step500/mp_rank_00_model_states.pt", A),
        (layout.LAYOUT_HF, "global_step500/zero_pp_rank_0_mp_rank_00_optim_states.pt", A),
        (layout.LAYOUT_HF, "global_step500/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", A),
        (layout.LAYOUT_HF, "global_step500/.nfs000000001", F),
        (layout.LAYOUT_HF, "model.safetensors.tmp", F),
        (layout.LAYOUT_HF, "eval_notes.txt", F),
        (layout.LAYOUT_HF, "analysis/README.md", F),
        (layout.LAYOUT_HF, "run.log", F),
        (layout.LAYOUT_HF, "plot.py", F),
    ],
)
def test_file_role(kind: str, relpath: str, role: str) -> None:
    assert layout.file_role(kind, tuple(relpath.split("/"))) == role
    assert layout.role_of(kind, relpath) == role


def test_roles_match_the_index_constants() -> None:
    from ckpt_tui import db

    assert (layout.ROLE_ARTIFACT, layout.ROLE_FOREIGN) == (db.ROLE_ARTIFACT, db.ROLE_FOREIGN)


@pytest.mark.parametrize(
    ("step_parent", "root", "name"),
    [
        (("alice", "exp1", "checkpoints"), "/data", "alice/exp1"),
        (("alice", "exp1"), "/data", "alice/exp1"),
        (("checkpoints",), "/data/train_1", "train_1"),
        ((), "/data/train_1/checkpoints", "train_1"),
        ((), "/data/train_1/checkpoints/", "train_1"),
        ((), "/data/3kx8f2ab", "3kx8f2ab"),
        (("proj", "checkpoints", "3kx8f2ab"), "/data", "proj/checkpoints/3kx8f2ab"),
        ((), "/", "/"),
        ((), "/checkpoints", "/"),
    ],
)
def test_training_name(step_parent: tuple[str, ...], root: str, name: str) -> None:
    assert layout.training_name(step_parent, root) == name

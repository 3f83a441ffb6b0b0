"""Path grammar: which directories are steps, which are layers, and what a record may name.

Pure functions only: no filesystem access, so the scanner, the deleter and the fuzz tests
share one definition of what a valid checkpoint path is. A step is recognised by its name
*and its content*: the walker lists a candidate folder once and asks ``step_layout`` and
``is_saelens_step`` what it is; ``file_role`` then says which files under it the step's
layout names (artifacts) and which it does not (foreign: shown, kept by default).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

# checkpoint_498000 (miStudio, single layer), checkpoint-500 (HF Trainer)
_STEP_RE = re.compile(r"^checkpoint[_-](\d{1,18})$")
# SAELens: <checkpoint_path>/<run_id>/<n_training_samples>/ and final_<n>/
_SAMPLES_RE = re.compile(r"^(?:final_)?(\d{1,18})$")
# layer_7, layer_14_residual, layer_3_resid_post
_LAYER_RE = re.compile(r"^layer_(\d{1,6})(?:_([A-Za-z0-9][A-Za-z0-9_.-]{0,63}))?$")
CHECKPOINTS_DIR = "checkpoints"
MAX_COMPONENT = 255

# Layouts of a step folder (ScannedStep.layout); decided from its name and its listing.
LAYOUT_MISTUDIO = "mistudio"  # checkpoint_<n>/layer_<n>[_<hook>]/checkpoint.safetensors
LAYOUT_SINGLE = "single"  # checkpoint_<n>/*.safetensors
LAYOUT_HF = "hf"  # checkpoint-<n>/ written by transformers' Trainer (+ PEFT, DeepSpeed, FSDP)
LAYOUT_SAELENS = "saelens"  # <n>/ or final_<n>/ holding SAELens weights

# File roles, as stored in ``files.role`` (mirrors ckpt_tui.db.ROLE_*; no db import here).
ROLE_ARTIFACT = "artifact"
ROLE_FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class LayerName:
    layer: int
    hook: str | None


def parse_step_dir(name: str) -> int | None:
    """The step number of a ``checkpoint_<n>`` / ``checkpoint-<n>`` name, or None."""
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


def parse_samples_dir(name: str) -> int | None:
    """The sample count of a SAELens-style ``<n>`` / ``final_<n>`` name, or None."""
    m = _SAMPLES_RE.match(name)
    return int(m.group(1)) if m else None


def step_candidate(name: str) -> tuple[int, str] | None:
    """(step, unit) if a folder called ``name`` may be a step; its content decides.

    The unit is "step" for trainer steps and "samples" for SAELens, whose folders are
    named by the number of training samples seen.
    """
    first = name[:1]
    if first == "c":  # a prefix test first: most folders are neither (called per directory)
        step = parse_step_dir(name)
        if step is not None:
            return step, "step"
    elif first.isdigit() or first == "f":
        samples = parse_samples_dir(name)
        if samples is not None:
            return samples, "samples"
    return None


# SAELens (jbloomAus/SAELens, sae_lens/constants.py; written by
# training/sae_trainer.py save_checkpoint + save_trainer_state, saes/sae.py save_model,
# training/activations_store.py save_to_checkpoint, llm_sae_training_runner.py
# save_checkpoint; same names since v3): everything a checkpoint folder holds.
SAE_WEIGHTS = "sae_weights.safetensors"
SAE_CFG = "cfg.json"
SAFETENSORS_SUFFIX = ".safetensors"
SAELENS_FILES = frozenset(
    {
        SAE_WEIGHTS,
        "sparsity.safetensors",
        SAE_CFG,
        "runner_cfg.json",
        "trainer_state.pt",
        "activation_scaler.json",
        "activations_store_state.safetensors",
    }
)


def is_saelens_step(file_names: Iterable[str]) -> bool:
    """Whether regular files directly inside a ``<n>/`` folder make it a SAELens step:
    ``sae_weights.safetensors``, or ``cfg.json`` together with a safetensors file."""
    names = file_names if isinstance(file_names, set | frozenset) else set(file_names)
    if SAE_WEIGHTS in names:
        return True
    return SAE_CFG in names and any(n.endswith(SAFETENSORS_SUFFIX) for n in names)


def step_layout(dirname: str, has_layer_dirs: bool) -> str:
    """The layout of a step folder (a ``step_candidate`` name), from its name and whether it
    holds ``layer_*`` folders."""
    if not dirname.startswith("checkpoint"):
        return LAYOUT_SAELENS
    if has_layer_dirs:
        return LAYOUT_MISTUDIO
    return LAYOUT_HF if dirname.startswith("checkpoint-") else LAYOUT_SINGLE


def step_unit(dirname: str) -> str:
    return "step" if parse_step_dir(dirname) is not None else "samples"


@functools.lru_cache(maxsize=4096)  # layer folder names repeat in every step
def parse_layer_dir(name: str) -> LayerName | None:
    m = _LAYER_RE.match(name)
    if not m:
        return None
    return LayerName(int(m.group(1)), m.group(2))


def training_dir_for(step_parent: tuple[str, ...]) -> tuple[str, ...]:
    """The training directory, given the components of a step directory's parent.

    A training is the directory above ``checkpoints/``, else the step directories' parent.
    """
    if step_parent and step_parent[-1] == CHECKPOINTS_DIR:
        return step_parent[:-1]
    return step_parent


def training_name(step_parent: tuple[str, ...], root: str) -> str:
    """A training's name: its folder relative to the root (``alice/exp1``), where the
    training folder is the steps' parent, or its parent when that is ``checkpoints/``.
    When the training folder is the root or above it, that folder's basename (root
    ``T/checkpoints`` -> ``T``). ``Training.relpath`` is ``join_parts(step_parent)``."""
    tparts = training_dir_for(step_parent)
    if tparts:
        return join_parts(tparts)
    folder = root.rstrip("/") or "/"
    if not step_parent and os.path.basename(folder) == CHECKPOINTS_DIR:
        folder = os.path.dirname(folder)  # the root is the checkpoints folder itself
    return os.path.basename(folder) or folder


# -- which files belong to a step -------------------------------------------------------------

# Never an artifact, whatever the layout: a save cut short or an editor's swap file.
_TEMPORARY_RE = re.compile(r"\.tmp|\.partial$|\.part$|^\..*\.sw[a-p]$|~$|^\.nfs")

# miStudio (Onegaishimas/miStudio backend/src/services/checkpoint_service.py
# save_multilayer_checkpoint / save_checkpoint): one file per layer folder, nothing else.
MISTUDIO_LAYER_FILE = "checkpoint.safetensors"

# transformers' Trainer (src/transformers/trainer.py _save_checkpoint, save_model, _save,
# _save_optimizer_and_scheduler, _save_scaler, _save_rng_state; modeling_utils save_pretrained;
# tokenization_utils_base / processing_utils save_pretrained), PEFT (src/peft/peft_model.py
# save_pretrained, utils/constants.py), DeepSpeed (deepspeed/runtime/engine.py save_checkpoint:
# ``latest``, ``zero_to_fp32.py``; ds_to_universal.py: ``latest_universal``).
HF_FILES = frozenset(
    {
        # Trainer state
        "trainer_state.json",
        "training_args.bin",
        "optimizer.pt",
        "optimizer.bin",
        "scheduler.pt",
        "scaler.pt",
        "user_content.pt",  # SageMaker model parallel marker
        # save_pretrained
        "config.json",
        "generation_config.json",
        # tokenizer / processor save_pretrained
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
        "chat_template.jinja",
        "chat_template.json",
        "preprocessor_config.json",
        "processor_config.json",
        "video_preprocessor_config.json",
        # PEFT
        "adapter_model.safetensors",
        "adapter_model.bin",
        "adapter_config.json",
        "README.md",  # PEFT's model card
        # DeepSpeed
        "latest",
        "latest_universal",
        "zero_to_fp32.py",
    }
)
_HF_FILE_RE = re.compile(
    r"model[^/]*\.safetensors(?:\.index\.json)?"  # model.safetensors, shards, their index
    r"|pytorch_model[^/]*\.bin(?:\.index\.json)?"  # .bin weights, shards, FSDP full/local
    r"|rng_state(?:_\d+)?\.pth"  # one per process in distributed training
    r"|optimizer_\d+\.bin"  # accelerate save_fsdp_optimizer, full state dict
    r"|rank\d+-of-\d+-(?:optimizer\.pt|pytorch_model\.bin)"  # XLA FSDP
    r"|(?:configuration|modeling|tokenization|processing|image_processing)_\w+\.py"  # remote code
)
# Folders whose whole content a producer writes: DeepSpeed's checkpoint tag (HF Trainer
# uses global_step<N>), accelerate's sharded FSDP model and optimizer (torch.distributed
# checkpoint files, ``.metadata`` included).
_HF_DIR_RE = re.compile(r"global_step\d+(?:_universal)?|pytorch_model_fsdp_\d+|optimizer_\d+")
HF_ADAPTER_FILES = frozenset(  # PEFT writes a named (non-default) adapter into <name>/
    {"adapter_model.safetensors", "adapter_model.bin", "adapter_config.json"}
)
HF_CHAT_TEMPLATES_DIR = "additional_chat_templates"  # <name>.jinja per extra chat template


def is_temporary(name: str) -> bool:
    """A file name that a writer leaves while saving (``*.tmp``, ``*.partial``, swap files)."""
    return _TEMPORARY_RE.search(name) is not None


def file_role(layout_kind: str, relparts: tuple[str, ...]) -> str:
    """``ROLE_ARTIFACT`` if the step's layout names the file at ``relparts`` (components
    inside the step folder), else ``ROLE_FOREIGN``."""
    if not relparts or is_temporary(relparts[-1]):
        return ROLE_FOREIGN
    name = relparts[-1]
    depth = len(relparts)
    if layout_kind == LAYOUT_MISTUDIO:
        hit = (
            depth == 2 and name == MISTUDIO_LAYER_FILE and parse_layer_dir(relparts[0]) is not None
        )
    elif layout_kind == LAYOUT_SINGLE:
        hit = depth == 1 and name.endswith(SAFETENSORS_SUFFIX)
    elif layout_kind == LAYOUT_SAELENS:
        hit = depth == 1 and name in SAELENS_FILES
    elif layout_kind == LAYOUT_HF:
        if depth == 1:
            hit = name in HF_FILES or _HF_FILE_RE.fullmatch(name) is not None
        else:
            top = relparts[0]
            hit = _HF_DIR_RE.fullmatch(top) is not None or (
                depth == 2
                and (
                    name in HF_ADAPTER_FILES
                    or (top == HF_CHAT_TEMPLATES_DIR and name.endswith(".jinja"))
                )
            )
    else:
        hit = False
    return ROLE_ARTIFACT if hit else ROLE_FOREIGN


@functools.lru_cache(maxsize=1 << 16)  # the same relpaths recur in every step of a training
def role_of(layout_kind: str, relpath: str) -> str:
    """``file_role`` of a "/"-separated path inside a step folder."""
    return file_role(layout_kind, tuple(relpath.split("/")))


def file_layer(relparts: tuple[str, ...]) -> LayerName | None:
    """Layer and hook of a file, from its path components inside the step directory."""
    if len(relparts) >= 2:
        return parse_layer_dir(relparts[0])
    return None


def is_safe_component(name: str) -> bool:
    """One path component a record may contain: no separators, no '.', '..', NUL or empty."""
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\0" not in name
        and (
            len(name) * 4 <= MAX_COMPONENT  # cannot exceed the limit: skip the encode
            or len(name.encode("utf-8", "surrogateescape")) <= MAX_COMPONENT
        )
    )


@functools.lru_cache(maxsize=1 << 16)  # file paths inside steps repeat across every step
def split_relpath(relpath: str) -> tuple[str, ...] | None:
    """Split a stored relative path into safe components, or None if any is unsafe.

    Rejects absolute paths, empty components ('a//b', trailing '/'), '.', '..' and NUL.
    """
    if not relpath or relpath.startswith("/"):
        return None
    parts = tuple(relpath.split("/"))
    if not all(is_safe_component(p) for p in parts):
        return None
    return parts


def join_parts(parts: tuple[str, ...]) -> str:
    return "/".join(parts)


def is_step_dirname(name: str) -> bool:
    return parse_step_dir(name) is not None or _SAMPLES_RE.match(name) is not None


@functools.lru_cache(maxsize=1 << 16)
def validate_step_record(step_relpath: str) -> tuple[str, ...] | None:
    """Components from the root to a step directory, or None if the record is unsafe."""
    parts = split_relpath(step_relpath)
    if parts is None or not is_step_dirname(parts[-1]):
        return None
    return parts


def validate_file_record(step_relpath: str, file_relpath: str) -> tuple[str, ...] | None:
    """Components from the root to a file, checked against the grammar, or None if unsafe.

    The step directory must parse as a step and the file must lie strictly inside it.
    """
    step = validate_step_record(step_relpath)
    inner = split_relpath(file_relpath)
    if step is None or inner is None:
        return None
    return (*step, *inner)

"""Path grammar: which directories are steps, which are layers, and what a record may name.

Pure functions only: no filesystem access, so the scanner, the deleter and the fuzz tests
share one definition of what a valid checkpoint path is.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# checkpoint_498000 (miStudio, single layer), checkpoint-500 (HF Trainer)
_STEP_RE = re.compile(r"^checkpoint[_-](\d{1,18})$")
# SAELens: <checkpoints>/<run_id>/<n_training_samples>/ and final_<n>/
_SAMPLES_RE = re.compile(r"^(?:final_)?(\d{1,18})$")
# layer_7, layer_14_residual, layer_3_resid_post
_LAYER_RE = re.compile(r"^layer_(\d{1,6})(?:_([A-Za-z0-9][A-Za-z0-9_.-]{0,63}))?$")
CHECKPOINTS_DIR = "checkpoints"
MAX_COMPONENT = 255


@dataclass(frozen=True, slots=True)
class LayerName:
    layer: int
    hook: str | None


def parse_step_dir(name: str) -> int | None:
    """The step number of a step directory name, or None if it is not one."""
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


def step_for_dir(parent: tuple[str, ...], name: str) -> tuple[int, str] | None:
    """(step, unit) if ``name`` under ``parent`` is a step directory of a known layout.

    The unit is "step" for trainer steps and "samples" for SAELens, whose directories are
    named by the number of training samples seen and sit in ``checkpoints/<run_id>/``.
    """
    step = parse_step_dir(name)
    if step is not None:
        return step, "step"
    if len(parent) >= 2 and parent[-2] == CHECKPOINTS_DIR:
        m = _SAMPLES_RE.match(name)
        if m:
            return int(m.group(1)), "samples"
    return None


def step_unit(dirname: str) -> str:
    return "step" if parse_step_dir(dirname) is not None else "samples"


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

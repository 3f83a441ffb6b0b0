"""A realistic demo tree: real safetensors headers, sparse data, so 190 GB costs no disk."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
D_IN = 2048
D_SAE = 15680  # 2 x 2048 x 15680 x 4 bytes + biases = 257.0 MB per layer file
STEP_SECONDS = 600  # demo steps were written ten minutes apart


def write_sparse_safetensors(
    path: Path,
    tensors: Mapping[str, tuple[str, Sequence[int]]],
    metadata: Mapping[str, str] | None = None,
    *,
    truncate_to: int | None = None,
) -> int:
    """Write a valid safetensors file whose data is a hole; returns its size in bytes.

    The header follows the format exactly (contiguous offsets, space padding to 8 bytes), so
    the ``safetensors`` library opens it; the zero data costs no disk on filesystems with holes.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = DTYPE_BYTES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    size = 8 + len(raw) + offset
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(size if truncate_to is None else truncate_to)
    return size


def sae_tensors(d_in: int = D_IN, d_sae: int = D_SAE) -> dict[str, tuple[str, Sequence[int]]]:
    return {
        "W_enc": ("F32", (d_in, d_sae)),
        "W_dec": ("F32", (d_sae, d_in)),
        "b_enc": ("F32", (d_sae,)),
        "b_dec": ("F32", (d_in,)),
    }


@dataclass(frozen=True)
class DemoTree:
    base: Path  # holds the root and the index, side by side
    root: Path
    db_path: Path


# demo trees this process made in a new temporary directory: removed when the app exits
_TEMPORARY: set[Path] = set()


def remove_if_temporary(root: str | os.PathLike[str]) -> bool:
    """Remove the demo tree (and its index) whose root is ``root`` if this process built it
    in a temporary directory of its own; anything else is left alone. True if removed."""
    base = Path(root).parent
    if base not in _TEMPORARY:
        return False
    _TEMPORARY.discard(base)
    shutil.rmtree(base, ignore_errors=True)
    return True


def _touch_age(path: Path, mtime: float) -> None:
    os.utime(path, (mtime, mtime))


def build_demo(base: Path | None = None, *, scale: float = 1.0) -> DemoTree:
    """Build the demo tree under ``base`` (a new temporary directory by default, which
    ``remove_if_temporary`` removes again)."""
    if base is None:
        base = Path(tempfile.mkdtemp(prefix="ckpt-tui-demo-"))
        _TEMPORARY.add(base)
    root = base / "trainings"
    now = time.time()

    def step_mtime(i: int, n: int) -> float:
        return now - (n - i) * STEP_SECONDS - 3600

    # 1. miStudio multi-layer training: 249 steps x 3 layers (the 186 GB clean-up)
    steps = [2000 * (i + 1) for i in range(max(3, int(249 * scale)))]
    t1 = root / "train_36766f85" / "checkpoints"
    for i, step in enumerate(steps):
        for layer in (7, 14, 18):
            if step == steps[len(steps) // 3] and layer == 18:
                continue  # an incomplete step: one layer never written
            p = t1 / f"checkpoint_{step}" / f"layer_{layer}" / "checkpoint.safetensors"
            loss = 0.5 / (1 + i / 20) + layer / 1000
            meta = {"step": str(step), "layer_idx": str(layer), "avg_loss": f"{loss:.5f}"}
            write_sparse_safetensors(p, sae_tensors(), meta)
            _touch_age(p, step_mtime(i, len(steps)))

    # 2. newer writer: hook-suffixed layer directories
    steps2 = [5000 * (i + 1) for i in range(max(3, int(60 * scale)))]
    t2 = root / "train_9f1c2a0b" / "checkpoints"
    for i, step in enumerate(steps2):
        for layer, hook in ((3, "residual"), (6, "mlp_out"), (9, "residual")):
            p = t2 / f"checkpoint_{step}" / f"layer_{layer}_{hook}" / "checkpoint.safetensors"
            meta = {
                "step": str(step),
                "layer_idx": str(layer),
                "hook": hook,
                "avg_loss": f"{0.4 / (1 + i / 10):.5f}",
            }
            last = i == len(steps2) - 1 and layer == 9
            size = write_sparse_safetensors(p, sae_tensors(768, 24576), meta)
            if last:  # the newest step is still being written: a truncated file
                write_sparse_safetensors(p, sae_tensors(768, 24576), meta, truncate_to=size // 3)
            _touch_age(p, step_mtime(i, len(steps2)))

    # 3. single-layer SAE: checkpoint_<step>/*.safetensors
    t3 = root / "sae_gpt2_small_l8"
    steps3 = [10_000 * (i + 1) for i in range(max(3, int(40 * scale)))]
    for i, step in enumerate(steps3):
        p = t3 / f"checkpoint_{step}" / "sae.safetensors"
        write_sparse_safetensors(
            p,
            sae_tensors(768, 12288),
            {"step": str(step), "layer_idx": "8", "avg_loss": f"{0.3 / (1 + i / 8):.5f}"},
        )
        _touch_age(p, step_mtime(i, len(steps3)))

    # 4. HF Trainer fine-tune: checkpoint-<step>/ with optimizer state and trainer json
    t4 = root / "hf_finetune_llama"
    steps4 = [500 * (i + 1) for i in range(max(3, int(12 * scale)))]
    for i, step in enumerate(steps4):
        d = t4 / f"checkpoint-{step}"
        write_sparse_safetensors(
            d / "model.safetensors",
            {
                "lm_head.weight": ("BF16", (32000, 2048)),
                "model.embed_tokens.weight": ("BF16", (32000, 2048)),
            },
            {"format": "pt"},
        )
        (d / "optimizer.pt").write_bytes(b"\0")
        os.truncate(d / "optimizer.pt", 524_288_000)
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        for f in d.iterdir():
            _touch_age(f, step_mtime(i, len(steps4)))
    return DemoTree(base=base, root=root, db_path=base / "index.sqlite3")

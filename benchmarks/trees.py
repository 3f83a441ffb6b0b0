"""Synthetic checkpoint trees: real safetensors headers, sparse (hole) data sections.

Layout (miStudio):
``<root>/train_<t>/checkpoints/checkpoint_<step>/layer_<n>/checkpoint.safetensors``.
Each file gets a real header (with per-file ``__metadata__``) written by
``ckpt_tui.demo.write_sparse_safetensors``'s format: the data section is a hole, so a 100k-file
tree of "257 MB" files costs only inodes and one block each.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from ckpt_tui.demo import sae_tensors, write_sparse_safetensors

D_IN, D_SAE = 2048, 15680  # 257 MB per layer file, as in the demo
OLD_AGE = 86_400.0  # files a day old: outside the planner's live-writer window


@dataclass(frozen=True)
class TreeSpec:
    trainings: int
    steps: int
    layers: int

    @property
    def files(self) -> int:
        return self.trainings * self.steps * self.layers

    @property
    def name(self) -> str:
        return f"t{self.trainings}_s{self.steps}_l{self.layers}"


def _header_template() -> tuple[bytes, int]:
    """A header with placeholders, so building 100k files costs no JSON encoding per file."""
    tensors = sae_tensors(D_IN, D_SAE)
    header: dict[str, object] = {
        "__metadata__": {"step": "@STEP@", "layer_idx": "@LAYER@", "avg_loss": "0.12345"}
    }
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    return json.dumps(header, separators=(",", ":")).encode(), offset


def _file_bytes(template: bytes, step: int, layer: int) -> bytes:
    raw = template.replace(b"@STEP@", str(step).encode()).replace(b"@LAYER@", str(layer).encode())
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def build_tree(root: Path, spec: TreeSpec, *, mtime: float | None = None) -> Path:
    """Build ``spec`` under ``root`` (created); every file gets the same old mtime."""
    mtime = time.time() - OLD_AGE if mtime is None else mtime
    template, data_bytes = _header_template()
    root.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    for t in range(spec.trainings):
        ckpts = root / f"train_{t:04d}" / "checkpoints"
        ckpts.mkdir(parents=True, exist_ok=True)
        for i in range(spec.steps):
            step = 1000 * (i + 1)
            step_dir = os.path.join(ckpts, f"checkpoint_{step}")
            os.mkdir(step_dir)
            for layer in range(spec.layers):
                layer_dir = os.path.join(step_dir, f"layer_{layer}")
                os.mkdir(layer_dir)
                path = os.path.join(layer_dir, "checkpoint.safetensors")
                head = _file_bytes(template, step, layer)
                fd = os.open(path, flags, 0o644)
                try:
                    os.write(fd, head)
                    os.ftruncate(fd, len(head) + data_bytes)
                finally:
                    os.close(fd)
                os.utime(path, ns=(int(mtime * 1e9), int(mtime * 1e9)))
    return root


def build_small(root: Path, n_files: int = 10) -> Path:
    """A tiny tree (one training, ``n_files`` single-layer steps) for reference runs."""
    root.mkdir(parents=True, exist_ok=True)
    old = time.time() - OLD_AGE
    for i in range(n_files):
        p = root / "train_small" / "checkpoints" / f"checkpoint_{1000 * (i + 1)}" / "layer_0"
        f = write_sparse_safetensors(p / "checkpoint.safetensors", sae_tensors(), {"step": str(i)})
        del f
        os.utime(p / "checkpoint.safetensors", (old, old))
    return root


def copy_tree(src: Path, dst: Path) -> Path:
    """A copy that keeps holes and mtimes (cp -a --sparse=always is far faster than Python)."""
    import subprocess

    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", "--sparse=always", str(src), str(dst)], check=True)
    return dst

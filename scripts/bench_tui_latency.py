"""Keypress latency (key -> last paint) with one training of 10 vs 10,000 steps expanded.

Builds both trees (tiny sparse safetensors, miStudio layout) under --work, indexes them, and
reuses the benchmark suite's measurement (``benchmarks.tuibench.keypress_case``: the app's
``_display`` is wrapped to timestamp every paint; latency = last paint after the key - t0).

    python scripts/bench_tui_latency.py [--steps 10000] [--presses 25] [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.trees import TreeSpec, build_tree
from benchmarks.tuibench import keypress_case, p95
from ckpt_tui.service import CheckpointService


async def index(root: Path, db: Path) -> None:
    async with await CheckpointService.open(str(db)) as svc:
        await svc.scan(str(root))


def prepare(work: Path, steps: int) -> tuple[str, str]:
    """A one-training tree with ``steps`` single-layer steps, indexed once (reused if present)."""
    root, db = work / f"steps_{steps}" / "root", work / f"steps_{steps}" / "index.sqlite3"
    if not db.exists():
        build_tree(root, TreeSpec(1, steps, 1))
        asyncio.run(index(root, db))
    return str(root), str(db)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--presses", type=int, default=25)
    p.add_argument("--work", type=Path, default=None)
    a = p.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="ckpt-tui-latency-"))
    print(f"trees in {work}")
    for steps in (10, a.steps):
        root, db = prepare(work, steps)
        out = asyncio.run(keypress_case(root, db, steps, a.presses))
        for kind in ("move", "mark"):
            xs = out[kind]
            med, hi = statistics.median(xs) * 1e3, p95(xs) * 1e3
            print(
                f"{steps:>6} steps expanded  {kind:<4}  median {med:5.1f} ms  p95 {hi:5.1f} ms"
                f"  max {max(xs) * 1e3:5.1f} ms  (n={len(xs)})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

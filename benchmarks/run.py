"""Entry point: build trees, run every benchmark next to its reference, print and save."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import fsbench
from benchmarks.common import Result, machine
from benchmarks.trees import TreeSpec, build_tree

RESULTS = Path(__file__).parent / "results"


def _fmt(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "MB":
        return f"{v:.0f} MB"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def table(results: list[Result], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    head = (
        f"ckpt-tui benchmarks  {meta['date']}  {m['cpus']} CPUs, {m['mem_gb']} GB RAM, "
        f"Python {m['python']}  load avg at start {m['loadavg'][0]:.2f}"
        + ("  (--quick: small sizes)" if meta["quick"] else "")
    )
    rows = [("measure", "value", "reference", "ref value", "ratio", "target", "result")]
    for r in results:
        rows.append(
            (
                r.measure,
                _fmt(r.value, r.unit),
                r.reference or "-",
                _fmt(r.reference_value, r.unit),
                f"{r.ratio:.2f}x" if r.ratio is not None else "-",
                r.target,
                "PASS" if r.passed else ("FAIL" if r.passed is False else "-"),
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for j, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run (< 60 s)")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    p.add_argument("--work", type=Path, help="where trees go (default: a new dir in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the trees and indexes")
    p.add_argument("--skip-tui", action="store_true", help="no TUI benchmarks")
    p.add_argument("--skip-e2e", action="store_true", help="no end-to-end (new process) ones")
    a = p.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": a.quick,
        "work": str(work),
    }
    t0 = time.perf_counter()
    results: list[Result] = []
    errors: list[str] = []
    try:
        fs_results, indexes = fsbench.run(work, a.quick)
        results += fs_results
        if not a.skip_e2e:
            from benchmarks import e2e

            results += e2e.run(work, a.quick, skip_tui=a.skip_tui)
        if not a.skip_tui:
            results += _tui(work, a.quick, indexes)
    except Exception:  # report what ran, and the failure
        errors.append(traceback.format_exc())
        print(errors[-1])
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    meta["machine"]["loadavg_end"] = machine()["loadavg"]
    doc = {**meta, "results": [r.to_json() for r in results], "errors": errors}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    print()
    print(table(results, meta))
    print(f"\n{len(results)} measurements in {meta['seconds']} s; written to {a.out}")
    return 1 if errors else 0


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def _tui(work: Path, quick: bool, indexes: dict[str, str]) -> list[Result]:
    from benchmarks import tuibench

    deep_steps = 1000 if quick else 10_000
    trees: dict[str, tuple[Path, str]] = {}
    for name, spec in (
        ("tiny", TreeSpec(1, 10, 1)),
        ("shallow", TreeSpec(1, 10, 1)),
        ("deep", TreeSpec(1, deep_steps, 1)),
    ):
        root = work / f"tui-{name}"
        if not root.exists():
            build_tree(root, spec)
        db = fsbench._fresh_db(work / f"index-tui-{name}.sqlite3")
        asyncio.run(fsbench._scan(db, root))
        trees[name] = (root, db)
    large_spec = TreeSpec(5, 250, 4) if quick else TreeSpec(100, 250, 4)
    large_root = work / f"tree-{large_spec.name}"
    return tuibench.run(
        large=(str(large_root), indexes["large"]),
        tiny=(str(trees["tiny"][0]), trees["tiny"][1]),
        deep=(str(trees["deep"][0]), trees["deep"][1], deep_steps),
        shallow=(str(trees["shallow"][0]), trees["shallow"][1], 10),
        quick=quick,
    )

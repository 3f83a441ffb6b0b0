#!/usr/bin/env python3
"""Mutation testing of the safety-critical modules with mutmut, one module at a time.

    python mutation/run.py                      # full run, every module (before each release)
    python mutation/run.py fs retention         # only these modules
    python mutation/run.py --sample 8           # CI: about one mutant in 8 of each module
    python mutation/run.py --worktree fs        # mutate the working tree, not HEAD

Each module is mutated in its own throwaway copy of the repository (``git clone`` of HEAD,
or a copy of the working tree with ``--worktree``) under ``--workdir``; nothing is written
into this repository except ``mutation/results/<module>.json`` and ``mutation/report.md``.
The tests run against each module are its own selection (``MODULE_TESTS``; mutmut further
runs, for each mutant, only the tests that reached the mutated function); even so a full
run of all six takes about 6 h on two cores, planning and deletion most of it
(``mutation/README.md``, "Cost").

A sampled run takes the mutants numbered ``offset, offset+K, offset+2K, ...`` in every
function (mutmut numbers a function's mutants 1, 2, ...), which spreads the sample over
every function and every kind of mutation; ``--seed`` picks the offset.

Survivors are listed in the report with their diff. A survivor that is equivalent (no
behaviour can tell it apart) or accepted is explained in ``mutation/explained.toml``
(``"<mutant name>" = "why"``, or a ``"<module>.<function>.*"`` pattern); any other
survivor is marked UNEXPLAINED and makes this script exit 1 when ``--strict`` is given.

Needs mutmut: ``pip install -r mutation/requirements.txt`` (beside the test extra).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "mutation"
RESULTS = HERE / "results"
REPORT = HERE / "report.md"
EXPLAINED = HERE / "explained.toml"

# Order: the modules that change least first.
MODULES = ("safetensors_header", "retention", "fs", "layout", "planning", "deletion")

# Per-module test selection (paths relative to the repository; globs allowed). Slow tests
# are deselected by ``-m "not slow"`` (see [tool.mutmut] in pyproject.toml).
MODULE_TESTS: dict[str, tuple[str, ...]] = {
    "safetensors_header": ("tests/test_safetensors_header.py", "tests/test_promises_header*.py"),
    "retention": (
        "tests/test_retention.py",
        "tests/reliability/test_fuzz_layout_retention.py",
        "tests/test_promises_retention*.py",
    ),
    "layout": (
        "tests/test_layouts.py",
        "tests/reliability/test_fuzz_layout_retention.py",
        "tests/reliability/test_hostile_index.py",
        "tests/test_promises_layout*.py",
    ),
    # fs: the layer's own in-process tests (test_promises_fs.py) and the deletion promises.
    # mutmut counts only tests that reach a function in-process (a CLI subprocess does not);
    # the service/CLI/reliability selection this replaces took 66 min.
    "fs": ("tests/test_promises_fs*.py", "tests/test_promises_deletion*.py"),
    # planning and deletion: in-process tests only (service, promises, click's runner), so
    # a surviving mutant costs seconds, not the minute the CLI-subprocess selection took.
    # The miStudio tests need PostgreSQL (CKPT_TUI_TEST_PG_URL); without it they skip and
    # the miStudio code counts as "no tests" (main() warns).
    "planning": (
        "tests/test_promises_planning*.py",
        "tests/test_promises_deletion*.py",
        "tests/test_service.py",
        "tests/reliability/test_careful_plans.py",
        "tests/test_retention.py",
        "tests/test_mistudio.py",
    ),
    "deletion": (
        "tests/test_promises_deletion*.py",
        "tests/test_service.py",
        "tests/test_history.py",
        "tests/reliability/test_careful_plans.py",
        "tests/reliability/test_symlink_race.py",
        "tests/reliability/test_crash_recovery.py",
        "tests/test_mistudio.py",
        "tests/reliability/test_per_item_errors.py::test_stop_errors_stop_the_batch_cleanly_and_resume",
        "tests/reliability/test_per_item_errors.py::test_rmdir_ebusy_stops_the_climb_quietly",
        "tests/reliability/test_hostile_index.py::"
        "test_recovery_of_a_hostile_deleting_row_never_crashes_the_open",
    ),
}

STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    37: "type check",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
    None: "not checked",
}


def sh(cmd: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, text=True, **kw)  # type: ignore[call-overload,no-any-return]


def prepare_copy(module: str, workdir: Path, worktree: bool) -> tuple[Path, str, list[str]]:
    dest = workdir / module
    if dest.exists():
        shutil.rmtree(dest)
    workdir.mkdir(parents=True, exist_ok=True)
    commit = sh(["git", "rev-parse", "HEAD"], REPO, capture_output=True).stdout.strip()
    if worktree:
        ignore = shutil.ignore_patterns(
            ".git",
            ".venv",
            ".ci-venv",
            "mutants",
            "__pycache__",
            ".pytest_cache",
            ".mypy_cache",
            ".ruff_cache",
            ".hypothesis",
            "benchmarks",
        )
        shutil.copytree(REPO, dest, ignore=ignore)
        dirty = sh(
            ["git", "status", "--porcelain", "--", "ckpt_tui", "tests"], REPO, capture_output=True
        ).stdout.strip()
        if dirty:
            commit += "+worktree"
    else:
        sh(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(dest)], REPO, check=True)
        sh(["git", "checkout", "--quiet", commit], dest, check=True)
    tests: list[str] = []
    for pattern in MODULE_TESTS[module]:
        if "::" in pattern:  # one test (node id) of a file otherwise too slow to select
            tests.append(pattern)
            continue
        tests += sorted(str(p.relative_to(dest)) for p in dest.glob(pattern))
    # The copy's [tool.mutmut]: this repository's settings, narrowed to one module.
    py = dest / "pyproject.toml"
    text = py.read_text()
    base = tomllib.loads(text).get("tool", {}).get("mutmut", {})
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[).)*", "\n", text, flags=re.S)
    conf = dict(base)
    conf["source_paths"] = ["ckpt_tui"]
    conf["only_mutate"] = [f"ckpt_tui/{module}.py"]
    conf["pytest_add_cli_args_test_selection"] = tests
    # mutmut needs a green selection: a test already failing on this commit (someone's work
    # in progress) is deselected and named in the report, not silently dropped.
    failing = failing_tests(dest, tests, list(base.get("pytest_add_cli_args", [])))
    for nodeid in failing:
        conf["pytest_add_cli_args"] = [*conf.get("pytest_add_cli_args", []), "--deselect", nodeid]
    lines = ["", "[tool.mutmut]"]
    for k, v in conf.items():
        lines.append(f"{k} = {json.dumps(v)}")
    py.write_text(text.rstrip() + "\n" + "\n".join(lines) + "\n")
    return dest, commit, failing


def failing_tests(dest: Path, tests: list[str], extra: list[str]) -> list[str]:
    proc = sh(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rf",
            "-p",
            "no:cacheprovider",
            *[a for a in extra if a != "-x"],
            *tests,
        ],
        dest,
        capture_output=True,
    )
    return sorted({ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("FAILED ")})


def sample_patterns(module: str, every: int, seed: int) -> list[str]:
    offset = 1 + seed % every
    return [f"ckpt_tui.{module}.*__mutmut_{n}" for n in range(offset, 600, every)]


def diffs(mutated: Path, names: list[str]) -> dict[str, str]:
    """Each mutant's changed lines, diffed against its function's original in mutmut's
    mutated copy of the module (one parse; ``mutmut show`` re-reads the file per mutant)."""
    import ast
    import difflib
    import textwrap

    text = mutated.read_text()
    lines_of = text.splitlines()
    defs = {
        n.name: textwrap.dedent("\n".join(lines_of[n.lineno - 1 : n.end_lineno]))
        for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    out = {}
    for name in names:
        fn = name.rsplit(".", 1)[1]
        orig = defs[fn.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"].splitlines()
        new = defs[fn].splitlines()
        new[0] = new[0].replace(fn, fn.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
        lines = difflib.unified_diff(orig, new, lineterm="", n=0)
        out[name] = "\n".join(
            ln for ln in lines if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
        )
    return out


def show(dest: Path, name: str) -> str:
    out = sh(["mutmut", "show", name], dest, capture_output=True).stdout
    keep = [ln for ln in out.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return "\n".join(keep)


def collected(module: str, workdir: Path) -> tuple[Path, str, list[str], float]:
    """A mutmut run already done in ``workdir`` (this script was stopped while it ran): the
    copy, its commit, the tests deselected there, and how long the run took."""
    dest = workdir / module
    commit = sh(["git", "rev-parse", "HEAD"], dest, capture_output=True).stdout.strip()
    if not (dest / ".git").exists():
        commit += "+worktree"
    conf = tomllib.loads((dest / "pyproject.toml").read_text())["tool"]["mutmut"]
    args = conf.get("pytest_add_cli_args", [])
    failing = [args[i + 1] for i, a in enumerate(args) if a == "--deselect"]
    mutants = dest / "mutants" / "ckpt_tui"
    start = (mutants / "__init__.py").stat().st_mtime  # written when mutmut began
    end = (mutants / f"{module}.py.meta").stat().st_mtime
    return dest, commit, failing, end - start


def run_module(module: str, args: argparse.Namespace) -> dict[str, Any]:
    rerun: list[str] = []
    if args.collect:
        dest, commit, failing, seconds = collected(module, Path(args.workdir))
        rerun = rerun_names(module, args) if args.survivors else []
        return results_of(module, dest, commit, failing, seconds, 0, rerun, args)
    dest, commit, failing = prepare_copy(module, Path(args.workdir), args.worktree)
    cmd = ["mutmut", "run", "--max-children", str(args.max_children)]
    if args.survivors:
        rerun = rerun_names(module, args)
        if not rerun:
            raise SystemExit(f"{module}: no survivors to re-run")
        cmd += rerun
    elif args.sample:
        cmd += sample_patterns(module, args.sample, args.seed)
    t0 = time.monotonic()
    log = Path(args.workdir) / f"{module}.log"
    with log.open("w") as out:
        proc = sh(cmd, dest, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - t0
    meta = dest / "mutants" / "ckpt_tui" / f"{module}.py.meta"
    if proc.returncode != 0 or not meta.exists():
        raise SystemExit(
            f"mutmut produced no results for {module} (exit {proc.returncode}); see {log}"
        )
    return results_of(module, dest, commit, failing, seconds, proc.returncode, rerun, args)


def results_of(
    module: str,
    dest: Path,
    commit: str,
    failing: list[str],
    seconds: float,
    exit_code: int,
    rerun: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The result of the mutmut run in ``dest``, from its meta file."""
    meta = dest / "mutants" / "ckpt_tui" / f"{module}.py.meta"
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    if rerun:
        codes = {k: v for k, v in codes.items() if k in rerun}
    elif args.sample:
        pats = sample_patterns(module, args.sample, args.seed)
        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, p) for p in pats)}
    statuses = {k: STATUS.get(v, "suspicious") for k, v in codes.items()}
    names = [k for k, s in sorted(statuses.items()) if s == "survived"]
    survivors = diffs(dest / "mutants" / "ckpt_tui" / f"{module}.py", names)
    return {
        "module": module,
        "commit": commit,
        "date": dt.date.today().isoformat(),
        "sample": args.sample or None,
        "seconds": round(seconds),
        "tests": MODULE_TESTS[module],
        "deselected_failing": failing,
        "counts": dict(collections.Counter(statuses.values())),
        "survivors": survivors,
        "mutmut_exit": exit_code,
        **({"rerun": rerun} if rerun else {}),
    }


def standing(module: str) -> dict[str, Any]:
    """The module's full result, with its ``after`` (a re-run of its survivors) applied."""
    path = RESULTS / f"{module}.json"
    r = json.loads(path.read_text()) if path.exists() else {}
    if not r or r.get("sample"):
        raise SystemExit(f"{module}: --survivors needs a full result in {path}")
    return {**r, **r["after"]} if r.get("after") else r


def rerun_names(module: str, args: argparse.Namespace) -> list[str]:
    """The standing survivors to re-run: all, or with --unexplained those that
    mutation/explained.toml does not explain (an explained one is known equivalent)."""
    names = sorted(standing(module)["survivors"])
    if not args.unexplained:
        return names
    explained = tomllib.loads(EXPLAINED.read_text()) if EXPLAINED.exists() else {}
    return [n for n in names if explanation(n, explained) is None]


def record_rerun(module: str, result: dict[str, Any]) -> None:
    """Store a re-run of standing survivors (``result["rerun"]``) as the full result's
    ``after``: the killed ones move to killed, the rest stay survivors (with the commit the
    tests came from); survivors not re-run stay as they were."""
    path = RESULTS / f"{module}.json"
    full = json.loads(path.read_text())
    before = standing(module)
    counts = collections.Counter(before["counts"])
    rerun = result["rerun"]
    counts["survived"] -= len(rerun)
    counts.update(result["counts"])
    killed = len(rerun) - len(result["survivors"])
    kept = {n: d for n, d in before["survivors"].items() if n not in rerun}
    survivors = dict(sorted({**kept, **result["survivors"]}.items()))
    earlier = f"{before['after']['note']} Then " if before.get("after") else ""
    full["after"] = {
        "commit": f"{full['commit'][:12]} mutants, tests of {str(result['commit'])[:12]}",
        "date": result["date"],
        "counts": {k: v for k, v in counts.items() if v},
        "survivors": survivors,
        "note": f"{earlier}{len(rerun)} of the {len(before['survivors'])} survivors re-run "
        f"with the tests of {str(result['commit'])[:12]} ({result['seconds']} s): "
        f"{killed} killed, {len(result['survivors'])} left.",
    }
    path.write_text(json.dumps(full, indent=1) + "\n")


def explanation(name: str, explained: dict[str, str]) -> str | None:
    if name in explained:
        return explained[name]
    for pattern, why in explained.items():
        if any(c in pattern for c in "*?[") and fnmatch.fnmatch(name, pattern):
            return why
    return None


def render(explained: dict[str, str]) -> tuple[str, dict[str, int]]:
    results = [
        json.loads((RESULTS / f"{m}.json").read_text())
        for m in MODULES
        if (RESULTS / f"{m}.json").exists()
    ]
    lines = [
        "# Mutation testing report",
        "",
        "Generated by `python mutation/run.py` (see `mutation/README.md`); do not edit by",
        "hand: explanations of surviving mutants live in `mutation/explained.toml`.",
        "",
        'Score = killed / (killed + survived + timeout); "no tests" are mutants that no',
        "selected test reaches in-process (code reached only through a CLI subprocess).",
        "",
        "| module | commit | run | mutants | killed | survived | timeout | no tests | "
        "not checked | score | unexplained |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    unexplained_by_module: dict[str, int] = {}
    # "after": the survivors re-tested once new tests were written; that is the standing.
    current = [{**r, **r["after"]} if r.get("after") else r for r in results]
    for r in current:
        c = collections.Counter(r["counts"])
        killed, surv, tout = c["killed"], c["survived"], c["timeout"]
        denom = killed + surv + tout
        score = f"{100 * killed / denom:.1f}%" if denom else "-"
        unexplained = [n for n in r["survivors"] if explanation(n, explained) is None]
        unexplained_by_module[r["module"]] = len(unexplained)
        run = (
            f"sample 1/{r['sample']}" if r["sample"] else "partial" if c["not checked"] else "full"
        )
        lines.append(
            f"| {r['module']} | {r['commit'][:12]} | {run}, {r['date']}, "
            f"{r['seconds']} s | {sum(c.values())} | {killed} | {surv} | {tout} | "
            f"{c['no tests']} | {c['not checked']} | {score} | {len(unexplained)} |"
        )
    for before, r in zip(results, current, strict=True):
        lines += ["", f"## {r['module']}", ""]
        if before.get("after"):
            b = collections.Counter(before["counts"])
            lines += [
                f"Before: {b['killed']} killed, {b['survived']} survived, "
                f"{b['timeout']} timeout, {b['no tests']} no tests "
                f"(commit {before['commit'][:12]}, full run).",
                "",
                f"After: {before['after']['note']}",
                "",
            ]
        if r.get("note"):
            lines += [r["note"], ""]
        lines += [f"Tests: {', '.join('`' + t + '`' for t in r['tests'])}.", ""]
        if r.get("deselected_failing"):
            lines += [
                "Deselected, failing on this commit before any mutation: "
                + ", ".join(f"`{t}`" for t in r["deselected_failing"])
                + ".",
                "",
            ]
        if not r["survivors"]:
            lines.append("No surviving mutants.")
            continue
        for name, diff in r["survivors"].items():
            why = explanation(name, explained)
            lines += [
                f"- `{name}`: " + (why if why else "**UNEXPLAINED**"),
                "",
                "  ```diff",
                *[f"  {d}" for d in diff.splitlines()],
                "  ```",
            ]
    return "\n".join(lines) + "\n", unexplained_by_module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(MODULES)}")
    ap.add_argument(
        "--sample",
        type=int,
        default=0,
        metavar="K",
        help="run about one mutant in K of each function (CI); 0: all",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--workdir", default="/tmp/ckpt-tui-mutation")
    ap.add_argument(
        "--worktree",
        action="store_true",
        help="mutate a copy of the working tree instead of a clone of HEAD",
    )
    ap.add_argument(
        "--survivors",
        action="store_true",
        help="re-run only the survivors of each module's full result (new tests, "
        "same code) and record the outcome as that result's 'after'",
    )
    ap.add_argument(
        "--unexplained",
        action="store_true",
        help="with --survivors: re-run only the survivors mutation/explained.toml does not explain",
    )
    ap.add_argument(
        "--collect",
        action="store_true",
        help="record the mutmut run already done in --workdir (this script stopped meanwhile)",
    )
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--strict", action="store_true", help="exit 1 on an unexplained survivor")
    args = ap.parse_args()
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"unknown module {unknown[0]!r}; choose from {', '.join(MODULES)}")
    if shutil.which("mutmut") is None:
        raise SystemExit("mutmut is not installed: pip install -r mutation/requirements.txt")
    explained = tomllib.loads(EXPLAINED.read_text()) if EXPLAINED.exists() else {}
    pg_needed = {"planning", "deletion"} & set(args.modules or MODULES)
    if pg_needed and not args.report_only and not os.environ.get("CKPT_TUI_TEST_PG_URL"):
        print(
            "warning: CKPT_TUI_TEST_PG_URL is not set: the miStudio tests skip, and the "
            f"miStudio code of {', '.join(sorted(pg_needed))} counts as 'no tests'",
            file=sys.stderr,
        )
    RESULTS.mkdir(exist_ok=True)
    if not args.report_only:
        for module in args.modules or MODULES:
            print(f"mutating ckpt_tui/{module}.py ...", flush=True)
            result = run_module(module, args)
            if args.survivors:
                record_rerun(module, result)
                print(f"  {module}: survivors re-run: {result['counts']}", flush=True)
                continue
            out = RESULTS / f"{module}.json"
            full_before = out.exists() and not json.loads(out.read_text()).get("sample")
            if args.sample and full_before:  # a sample never overwrites a full result
                out = Path(args.workdir) / f"{module}.sample.json"
            out.write_text(json.dumps(result, indent=1) + "\n")
            c = result["counts"]
            print(f"  {module}: {c} in {result['seconds']} s", flush=True)
            if args.sample:
                bad = [n for n in result["survivors"] if explanation(n, explained) is None]
                for n in bad:
                    print(f"  UNEXPLAINED survivor {n}\n{result['survivors'][n]}")
                if bad and args.strict:
                    return 1
    text, by_module = render(explained)
    REPORT.write_text(text)
    print(f"wrote {REPORT.relative_to(REPO)}: {sum(by_module.values())} unexplained survivors")
    # --strict judges the modules asked for (all by default), by their standing results.
    unexplained = sum(by_module.get(m, 0) for m in args.modules or MODULES)
    return 1 if args.strict and unexplained else 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end benchmarks: what a user waits for, from typing a command to the shell prompt
(or, for the TUI, to the first frame that shows the trainings).

Each ``e2e_*`` measure runs the real ``ckpt-tui`` in a new process, so interpreter start-up,
imports, opening the index and printing are all counted, next to a reference command run in
the same way and alternated with it (A B A B ...): ratios are best-of-N over best-of-N, as
for the in-process measures; medians and the median of the pairwise ratios are in
``details``.

Bytecode: an installed package has its ``.pyc`` files; a checkout run with
``PYTHONDONTWRITEBYTECODE`` set would compile every module of ckpt_tui at every start. So
that setting is dropped for the measured processes and their bytecode is cached under
``PYTHONPYCACHEPREFIX`` (a directory in the system temp dir, reused across runs), the same
for the reference commands; a warm-up run of each command fills it.

The TUI is started in a pseudo-terminal (120x40, ``TERM=xterm-256color``), the same terminal
driver a user's terminal gets; the clock stops when the name of the first training appears in
what the app has written.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Result, summary
from benchmarks.trees import TreeSpec, build_tree, copy_tree

TUI_SIZE = (120, 40)  # columns, rows
TUI_TIMEOUT = 60.0
PYCACHE = Path(tempfile.gettempdir()) / "ckpt-tui-bench-pycache"


def cli() -> list[str]:
    """The ``ckpt-tui`` console script next to this interpreter, else ``python -m ckpt_tui``."""
    script = Path(sys.executable).parent / "ckpt-tui"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "ckpt_tui"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    if e.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        PYCACHE.mkdir(parents=True, exist_ok=True)
        e["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return e


def wall(cmd: list[str], environ: dict[str, str]) -> float:
    """Wall time of a command from spawn to exit (output discarded); raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environ,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return seconds


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _result(
    rid: str,
    measure: str,
    samples: list[float],
    ref_samples: list[float],
    reference: str,
    limit: float,
    **details: object,
) -> Result:
    ratio = min(samples) / min(ref_samples)
    pairs = [a / b for a, b in zip(samples, ref_samples, strict=False)]
    return Result(
        id=rid,
        measure=measure,
        value=min(samples),
        reference=reference,
        reference_value=min(ref_samples),
        ratio=ratio,
        target=f"<= {limit}x",
        passed=ratio <= limit,
        details={
            "samples": summary(samples),
            "reference": summary(ref_samples),
            "pairwise_ratio_median": statistics.median(pairs),
            **details,
        },
    )


def alternate(
    a: Callable[[], float], b: Callable[[], float], n: int, *, warmup: bool = True
) -> tuple[list[float], list[float]]:
    """n samples of each, A B A B ..., after one unrecorded run of each."""
    if warmup:
        a()
        b()
    xs: list[float] = []
    ys: list[float] = []
    for _ in range(n):
        xs.append(a())
        ys.append(b())
    return xs, ys


# ----------------------------------------------------------------------------- the TUI


def tui_first_frame(cmd: list[str], environ: dict[str, str], text: bytes) -> float:
    """Seconds from spawning ``cmd`` in a pseudo-terminal until ``text`` appears in its output;
    the app is then terminated."""
    master, slave = os.openpty()
    cols, rows = TUI_SIZE
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    e = {**environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, env=e, start_new_session=True
    )
    os.close(slave)
    seen = b""
    try:
        while True:
            left = TUI_TIMEOUT - (time.perf_counter() - t0)
            if left <= 0:
                raise RuntimeError(
                    f"no {text!r} on screen after {TUI_TIMEOUT:.0f} s: {seen[-500:]!r}"
                )
            ready, _, _ = select.select([master], [], [], min(left, 1.0))
            if not ready:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd} exited {proc.returncode}: {seen[-2000:]!r}")
                continue
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the app closed the terminal
                chunk = b""
            if not chunk:
                raise RuntimeError(f"{cmd} closed its terminal: {seen[-2000:]!r}")
            # Keep a tail long enough for the text to straddle two reads.
            seen = seen[-len(text) :] + chunk
            if text in seen:
                return time.perf_counter() - t0
    finally:
        _stop(proc)
        os.close(master)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ----------------------------------------------------------------------------- measures


def bench_startup(
    work: Path, quick: bool, *, skip_tui: bool, log: Callable[[str], None]
) -> list[Result]:
    """--help, --version, ls of a 10-file tree, and the TUI's first frame with rows."""
    e, ckpt, n = env(), cli(), 2 if quick else 10
    root = work / "e2e-tiny"
    if not root.exists():
        build_tree(root, TreeSpec(1, 10, 1))
    db = _fresh_db(work / "index-e2e-tiny.sqlite3")
    wall([*ckpt, "scan", str(root), "--db", db], e)  # the index ls and the TUI read
    common = {"command": " ".join(Path(c).name for c in ckpt), "bytecode": _bytecode(e)}
    out: list[Result] = []
    click_ref = python("import click")
    for flag in ("--help", "--version"):
        log(f"e2e: ckpt-tui {flag} ...")
        cmd = [*ckpt, flag]
        xs, ys = alternate(lambda c=cmd: wall(c, e), lambda: wall(click_ref, e), n)  # type: ignore[misc]
        out.append(
            _result(
                f"e2e_{flag.strip('-')}",
                f"ckpt-tui {flag}",
                xs,
                ys,
                'python -c "import click"',
                2.0,
                **common,
            )
        )
    log("e2e: ckpt-tui ls, 10 files ...")
    sqla = python("import sqlalchemy.ext.asyncio")
    xs, ys = alternate(
        lambda: wall([*ckpt, "ls", str(root), "--db", db], e), lambda: wall(sqla, e), n
    )
    out.append(
        _result(
            "e2e_ls_10",
            "ckpt-tui ls, 10 files (indexed)",
            xs,
            ys,
            'python -c "import sqlalchemy.ext.asyncio"',
            1.5,
            **common,
        )
    )
    if not skip_tui:
        log("e2e: TUI first frame with rows, 10 files ...")
        tui_ref = python("import textual.app, sqlalchemy.ext.asyncio")
        xs, ys = alternate(
            lambda: tui_first_frame([*ckpt, str(root), "--db", db], e, b"train_0000"),
            lambda: wall(tui_ref, e),
            1 if quick else 5,
        )
        out.append(
            _result(
                "e2e_tui_first_frame",
                "TUI first frame with rows, 10 files, pty",
                xs,
                ys,
                'python -c "import textual.app, sqlalchemy.ext.asyncio"',
                1.3,
                terminal=f"pty {TUI_SIZE[0]}x{TUI_SIZE[1]}, TERM=xterm-256color",
                **common,
            )
        )
    return out


def bench_scan(
    work: Path,
    root: Path,
    label: str,
    *,
    first_runs: int,
    rescans: int,
    first_limit: float,
    log: Callable[[str], None],
) -> list[Result]:
    """``ckpt-tui scan ROOT`` into a fresh index, then again with nothing changed, vs du -s."""
    e, ckpt = env(), cli()
    du = ["du", "-s", str(root)]
    db = str(work / f"index-e2e-{label}.sqlite3")
    log(f"e2e: ckpt-tui scan, {label} files ...")

    def first() -> float:
        _fresh_db(Path(db))
        return wall([*ckpt, "scan", str(root), "--db", db], e)

    wall(du, e)  # warm the cache (the fs benchmarks have walked this tree already)
    xs, ys = alternate(first, lambda: wall(du, e), first_runs, warmup=False)
    rs, rys = alternate(
        lambda: wall([*ckpt, "scan", str(root), "--db", db], e),
        lambda: wall(du, e),
        rescans,
        warmup=False,
    )
    common = {"command": " ".join(Path(c).name for c in ckpt), "bytecode": _bytecode(e)}
    return [
        _result(
            f"e2e_scan_first_{label}",
            f"ckpt-tui scan, first time, {label} files",
            xs,
            ys,
            "du -s (warm)",
            first_limit,
            **common,
        ),
        _result(
            f"e2e_rescan_{label}",
            f"ckpt-tui scan again, nothing changed, {label} files",
            rs,
            rys,
            "du -s (warm)",
            2.5,
            **common,
        ),
    ]


def bench_prune(
    work: Path, master: Path, spec: TreeSpec, *, rounds: int, log: Callable[[str], None]
) -> list[Result]:
    """``ckpt-tui prune COPY --keep 1 --yes`` (indexed) vs ``rm -rf`` of the same step
    directories on another copy."""
    from benchmarks import fsbench

    e, ckpt = env(), cli()
    prunes: list[float] = []
    rms: list[float] = []
    deleted = 0
    log(f"e2e: ckpt-tui prune --keep 1 --yes, {spec.files:,} files ...")
    for i in range(rounds):
        a, b = work / f"e2e-prune-a{i}", work / f"e2e-prune-b{i}"
        copy_tree(master, a)
        copy_tree(master, b)
        db = _fresh_db(work / f"index-e2e-prune{i}.sqlite3")
        wall([*ckpt, "scan", str(a), "--db", db], e)
        victims = []
        for t in sorted(b.iterdir()):
            steps = sorted((t / "checkpoints").iterdir(), key=lambda p: int(p.name.split("_")[-1]))
            victims += [str(p) for p in steps[:-1]]
        deleted = len(victims) * spec.layers
        fsbench.du(a)
        fsbench.du(b)
        rms.append(fsbench._rm_rf(victims))
        prunes.append(wall([*ckpt, "prune", str(a), "--keep", "1", "--yes", "--db", db], e))
        left = sum(1 for _ in a.rglob("checkpoint_*"))
        assert left == spec.trainings, f"{left} step directories left, expected {spec.trainings}"
        shutil.rmtree(a)
        shutil.rmtree(b)
    return [
        _result(
            "e2e_prune",
            f"ckpt-tui prune --keep 1 --yes, {deleted:,} files (indexed)",
            prunes,
            rms,
            "rm -rf same step dirs (copy)",
            1.3,
            command=" ".join(Path(c).name for c in ckpt),
            bytecode=_bytecode(e),
            files_deleted=deleted,
        )
    ]


def run(
    work: Path, quick: bool, *, skip_tui: bool = False, log: Callable[[str], None] = print
) -> list[Result]:
    """Every end-to-end measure; the trees are the fs benchmarks' (built if missing)."""
    from benchmarks.fsbench import specs

    small, large = specs(quick)
    results = bench_startup(work, quick, skip_tui=skip_tui, log=log)
    sizes = [(small, f"{small.files // 1000}k", 4.0)]
    if not quick:  # the 100k-file e2e scan only in the full run
        sizes.append((large, f"{large.files // 1000}k", 3.0))
    for spec, label, limit in sizes:
        root = work / f"tree-{spec.name}"
        if not root.exists():
            build_tree(root, spec)
        results += bench_scan(
            work,
            root,
            label,
            first_runs=1 if quick else 3,
            rescans=2 if quick else 5,
            first_limit=limit,
            log=log,
        )
        if spec is small:
            results += bench_prune(work, root, spec, rounds=1 if quick else 2, log=log)
    return results


def _fresh_db(path: Path) -> str:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return str(path)


def _bytecode(e: dict[str, str]) -> str:
    prefix = e.get("PYTHONPYCACHEPREFIX")
    return f"cached in {prefix}" if prefix else "cached (__pycache__)"

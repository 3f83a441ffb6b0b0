"""What a plan contains, pinned where mutating ``ckpt_tui/planning.py`` went unnoticed
(issue 14, mutation/report.md): ids of another root, rows a hand-edited index damaged,
``rm`` targets inside a step, the reasons and sizes of the steps a prune keeps.

Real safetensors files in ``tmp_path``, a real SQLite index, the real service. The oracles
are the disk (``os.stat``, the folders left) and the index read with ``sqlite3``, never the
plan under test.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ckpt_tui.errors import TargetError
from ckpt_tui.protection import Protection
from ckpt_tui.retention import Best, Rules
from ckpt_tui.service import CheckpointService
from tests.conftest import OLD, make_training, write_checkpoint


async def _scanned(svc: CheckpointService, root: Path) -> int:
    await svc.scan(str(root))
    info = await svc.get_root(str(root))
    assert info is not None
    return info.id


def _sql(db: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(query, params).fetchall()
        con.commit()
    finally:
        con.close()
    return rows


def _file_ids(db: str, root: Path) -> dict[str, int]:
    """File id by absolute path, for the files of ``root`` (read with sqlite3)."""
    rows = _sql(
        db,
        "SELECT f.id, s.relpath, f.relpath FROM files f JOIN steps s ON s.id = f.step_id "
        "JOIN trainings t ON t.id = s.training_id JOIN roots r ON r.id = t.root_id "
        "WHERE r.path = ?",
        (str(root),),
    )
    return {str(root / str(srel) / str(frel)): int(str(fid)) for fid, srel, frel in rows}


def _step_ids(db: str, root: Path) -> dict[str, int]:
    """Step id by absolute step folder, for the steps of ``root`` (read with sqlite3)."""
    rows = _sql(
        db,
        "SELECT s.id, s.relpath FROM steps s JOIN trainings t ON t.id = s.training_id "
        "JOIN roots r ON r.id = t.root_id WHERE r.path = ?",
        (str(root),),
    )
    return {str(root / str(rel)) if rel else str(root): int(str(sid)) for sid, rel in rows}


def _planned(plan: object) -> set[str]:
    """Absolute paths of the files a plan unlinks."""
    return {os.path.join(plan.root, *f.relparts) for f in plan.files}  # type: ignore[attr-defined]


BLOB = b"\x00\xff"  # a step folder stored as bytes, not text


def _size(paths: list[Path]) -> int:
    return sum(os.stat(p).st_size for p in paths)


# ------------------------------------------------------------------ ids of another root


async def test_ids_of_another_root_are_never_planned_under_this_root(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """One index, two roots with the same layout: file or step ids of root B passed with a
    plan for root A are left out, whatever their number (one IN chunk, past the chunk, past
    the bulk threshold); before, B's step was planned under A's path and the run reported
    its file "already gone" and dropped B's row while the file stayed on disk."""
    svc = svc_unprotected
    a, b = tmp_path / "a", tmp_path / "b"
    make_training(a, "x", [100, 200], layers=["layer_0"])
    make_training(b, "x", [100, 200], layers=["layer_0"])
    (b / "x" / "checkpoints" / "checkpoint_50").mkdir()  # B's bare mkdir: plannable in B
    ra, _rb = await _scanned(svc, a), await _scanned(svc, b)
    a_files, b_files = _file_ids(db_path, a), _file_ids(db_path, b)
    a_steps, b_steps = _step_ids(db_path, a), _step_ids(db_path, b)
    mine = str(a / "x/checkpoints/checkpoint_100/layer_0/checkpoint.safetensors")
    for pad in ([], range(-1100, 0), range(-5100, 0), range(10**9, 10**9 + 600)):
        ids = [a_files[mine], *b_files.values(), *pad]  # ids the index does not have
        plan = await svc.plan_files(ra, ids, force=True)
        assert _planned(plan) == {mine}, pad
        assert [s.path for s in plan.steps] == [str(a / "x/checkpoints/checkpoint_100")]
    step = str(a / "x/checkpoints/checkpoint_200")
    high = range(10**9, 10**9 + 600)  # ids the index does not have sort last too
    for pad in ([], range(-1100, 0), range(-1300, 0), high):
        plan = await svc.plan_steps(ra, [a_steps[step], *b_steps.values(), *pad])
        assert [s.path for s in plan.steps] == [step], pad
        assert _planned(plan) == {f"{step}/layer_0/checkpoint.safetensors"}
    only_b = await svc.plan_steps(ra, list(b_steps.values()), force=True)
    assert only_b.empty and not only_b.protected and not only_b.foreign
    result = await svc.execute(only_b)
    assert not result.results
    assert len(_file_ids(db_path, b)) == 2 == len(list(b.rglob("*.safetensors")))
    assert (b / "x" / "checkpoints" / "checkpoint_50").is_dir()


async def test_marked_files_past_two_query_chunks_are_all_planned(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """1,100 marked files (three IN chunks) of one step: every one is planned, and the
    step goes whole; with a foreign file beside them the step is not whole."""
    root = tmp_path / "root"
    old = root / "run" / "checkpoint_100"
    old.mkdir(parents=True)
    tiny = (2).to_bytes(8, "little") + b"{}"  # a valid safetensors file with no tensor
    for i in range(1100):
        (old / f"shard_{i:04}.safetensors").write_bytes(tiny)
    write_checkpoint(root / "run" / "checkpoint_200" / "sae.safetensors", 200)
    rid = await _scanned(svc_unprotected, root)
    ids = _file_ids(db_path, root)
    shards = {p for p in ids if "/checkpoint_100/" in p}
    plan = await svc_unprotected.plan_files(rid, [ids[p] for p in shards])
    assert _planned(plan) == shards
    assert [(s.path, s.whole, s.indexed_files) for s in plan.steps] == [(str(old), True, 1100)]
    assert plan.bytes == 1100 * len(tiny) == _size([Path(p) for p in shards])


# --------------------------------------------------------------- rows a hand edit damaged


async def test_prune_refuses_damaged_step_rows_by_name_and_plans_every_other_training(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """A step row whose number is text, whose pinned flag is 2 or whose folder is not text is
    refused by its folder with one line; a real pin is kept as pinned; the other trainings'
    old steps are still planned (one bad row does not end the loop)."""
    root = tmp_path / "root"
    for name in ("t1", "t2", "t3", "t4", "t5"):
        make_training(root, name, [100, 200, 300], layers=["layer_0"])
    rid = await _scanned(svc_unprotected, root)
    steps = _step_ids(db_path, root)
    ck = {n: root / n / "checkpoints" for n in ("t1", "t2", "t3", "t4", "t5")}
    _sql(
        db_path,
        "UPDATE steps SET step = 'abc' WHERE id = ?",
        (steps[str(ck["t1"] / "checkpoint_100")],),
    )
    _sql(
        db_path,
        "UPDATE steps SET pinned = 2 WHERE id = ?",
        (steps[str(ck["t2"] / "checkpoint_100")],),
    )
    _sql(
        db_path,
        "UPDATE steps SET relpath = x'00ff' WHERE id = ?",
        (steps[str(ck["t3"] / "checkpoint_100")],),
    )
    await svc_unprotected.set_pinned([steps[str(ck["t4"] / "checkpoint_100")]], True)
    plan = await svc_unprotected.plan_retention(rid, 1, force=True)
    refused = {(p.path, p.reason, p.step_id) for p in plan.protected if p.file_id is None}
    assert refused == {
        (
            f"{root}/t1/checkpoints/checkpoint_100",
            "refused: malformed index row (step is 'abc', pinned is 0)",
            steps[str(ck["t1"] / "checkpoint_100")],
        ),
        (
            f"{root}/t2/checkpoints/checkpoint_100",
            "refused: malformed index row (step is 100, pinned is 2)",
            steps[str(ck["t2"] / "checkpoint_100")],
        ),
        (
            f"{root}/{BLOB!r}",
            "refused: malformed index row (step is 100, pinned is 0)",
            steps[str(ck["t3"] / "checkpoint_100")],
        ),
    }
    planned_steps = {s.path for s in plan.steps}
    assert planned_steps == {
        str(ck["t1"] / "checkpoint_200"),
        str(ck["t3"] / "checkpoint_200"),
        str(ck["t4"] / "checkpoint_200"),
        str(ck["t5"] / "checkpoint_100"),
        str(ck["t5"] / "checkpoint_200"),
    } | ({str(ck["t2"] / "checkpoint_200")})
    kept = {(k.path, k.reasons) for k in plan.keep if k.path.endswith("_100")}
    assert kept == {(str(ck["t4"] / "checkpoint_100"), ("pinned",))}


# ------------------------------------------------------------------------------ prune


async def test_keep_below_one_is_refused_with_one_line(
    tmp_path: Path, svc: CheckpointService
) -> None:
    root = tmp_path / "root"
    make_training(root, "t", [100, 200], layers=["layer_0"])
    rid = await _scanned(svc, root)
    with pytest.raises(TargetError) as err:
        await svc.plan_retention(rid, 0)
    assert str(err.value) == "--keep must be at least 1"


async def test_prune_of_named_trainings_plans_only_theirs(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """``--training t2`` plans t2's old step and nothing of t1 or t3, wherever t2 sits in the
    index; the steps kept are listed with their training, size and reasons."""
    root = tmp_path / "root"
    for name in ("t1", "t2", "t3"):
        make_training(root, name, [100, 200], layers=["layer_0", "layer_1"])
    rid = await _scanned(svc_unprotected, root)
    steps = _step_ids(db_path, root)
    for name in ("t1", "t2", "t3"):
        ck = root / name / "checkpoints"
        plan = await svc_unprotected.plan_retention(rid, 1, [name], force=True)
        assert [s.path for s in plan.steps] == [str(ck / "checkpoint_100")], name
        newest = sorted((ck / "checkpoint_200").rglob("*.safetensors"))
        assert [
            (k.step_id, k.training, k.step, k.path, k.size_bytes, k.reasons) for k in plan.keep
        ] == [
            (
                steps[str(ck / "checkpoint_200")],
                name,
                200,
                str(ck / "checkpoint_200"),
                _size(newest),
                ("newest",),
            )
        ]


def _metric_step(ck: Path, step: int, values: list[object]) -> list[Path]:
    """A two-layer step whose files carry ``avg_loss`` = each value (None: no such key)."""
    import numpy as np
    from safetensors.numpy import save_file

    out = []
    for i, value in enumerate(values):
        path = ck / f"checkpoint_{step}" / f"layer_{i}" / "checkpoint.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"step": str(step)} if value is None else {"avg_loss": str(value)}
        save_file({"W": np.zeros((2, 2), dtype=np.float32)}, str(path), metadata=meta)
        os.utime(path, (OLD, OLD))
        out.append(path)
    return out


async def test_best_ranks_a_step_by_the_mean_over_the_files_that_carry_the_key(
    tmp_path: Path, svc_unprotected: CheckpointService
) -> None:
    """``--best avg_loss``: a step's value is the mean over its files that carry the key (a
    file without it does not count as 0 nor as a vote); a step with a value that is not a
    number is kept, not guessed."""
    root = tmp_path / "root"
    ck = root / "run" / "checkpoints"
    _metric_step(ck, 100, [0.3, 0.3])  # mean 0.3: the best
    _metric_step(ck, 200, [0.5, None])  # mean 0.5 (its sum times its count would win)
    _metric_step(ck, 300, ["n/a", 0.1])  # not a number: unknown, kept
    _metric_step(ck, 400, [0.9, 0.9])  # worst
    _metric_step(ck, 500, [0.8, 0.8])  # newest
    rid = await _scanned(svc_unprotected, root)
    rules = Rules(keep=1, best=Best("avg_loss"))
    plan = await svc_unprotected.plan_retention(rid, 1, rules=rules, force=True)
    assert {k.step: k.reasons for k in plan.keep} == {
        100: ("best avg_loss",),
        300: ("no avg_loss: kept, not guessed",),
        500: ("newest",),
    }
    assert [s.step for s in plan.steps] == [200, 400]
    _metric_step(root / "solo" / "checkpoints", 100, [0.4, 0.4])  # one step: its own best
    await svc_unprotected.scan(str(root))
    plan = await svc_unprotected.plan_retention(rid, 1, ["solo"], rules=rules, force=True)
    assert [(k.step, k.reasons) for k in plan.keep] == [(100, ("newest", "best avg_loss"))]


# ------------------------------------------------------------------------- rm targets


async def test_rm_targets_inside_steps_plan_exactly_what_they_name(
    tmp_path: Path, svc_unprotected: CheckpointService
) -> None:
    """A layer folder plans its own files only (``layer_1`` is not ``layer_10``), a file its
    file, a step its step, a training folder its steps: all of them together, in any order."""
    svc = svc_unprotected
    root = tmp_path / "root"
    layers = ["layer_1", "layer_10"]
    for name in ("a", "b", "c"):
        make_training(root, name, [100, 200, 300], layers=layers)
    rid = await _scanned(svc, root)
    a, b, c = (root / n / "checkpoints" for n in ("a", "b", "c"))

    def files(step: Path, layer: str = "*") -> set[str]:
        return {str(p) for p in step.glob(f"{layer}/checkpoint.safetensors")}

    plan = await svc.plan_targets(rid, [str(a / "checkpoint_100" / "layer_1")], force=True)
    assert _planned(plan) == files(a / "checkpoint_100", "layer_1")
    assert [s.whole for s in plan.steps] == [False]
    one = a / "checkpoint_200" / "layer_10" / "checkpoint.safetensors"
    targets = [
        str(one),
        str(b / "checkpoint_200"),
        str(root / "c"),  # a training folder: every step of it
        str(b / "checkpoint_100" / "layer_1" / "checkpoint.safetensors"),
        str(a / "checkpoint_100" / "layer_1"),
    ]
    plan = await svc.plan_targets(rid, targets, force=True)
    assert _planned(plan) == (
        {str(one)}
        | files(c / "checkpoint_100")
        | files(c / "checkpoint_200")
        | files(c / "checkpoint_300")
        | files(b / "checkpoint_100", "layer_1")
        | files(b / "checkpoint_200")
        | files(a / "checkpoint_100", "layer_1")
    )
    assert plan.training_dirs == (("c", "checkpoints"), ("c",))


async def test_rm_targets_outside_the_index_are_refused_with_one_line(
    tmp_path: Path, svc: CheckpointService
) -> None:
    root = tmp_path / "root"
    make_training(root, "a", [100, 200], layers=["layer_1"])
    (tmp_path / "root2").mkdir()
    rid = await _scanned(svc, root)
    step = root / "a" / "checkpoints" / "checkpoint_100"
    cases = {
        str(tmp_path): f"{tmp_path} is not under the root {root}",
        str(tmp_path / "root2"): f"{tmp_path / 'root2'} is not under the root {root}",
        str(step / "layer_2"): (
            f"{step / 'layer_2'} is not an indexed file of step a/checkpoints/checkpoint_100"
        ),
        str(step / "layer_1" / "checkpoint"): (
            f"{step / 'layer_1' / 'checkpoint'} is not an indexed file of step "
            "a/checkpoints/checkpoint_100"
        ),
    }
    for target, message in cases.items():
        with pytest.raises(TargetError) as err:
            await svc.plan_targets(rid, [target], force=True)
        assert str(err.value) == message, target


async def test_rm_of_a_root_holding_one_trainings_steps_plans_them_and_their_files(
    tmp_path: Path, svc_unprotected: CheckpointService
) -> None:
    """Steps sitting in the root itself: ``rm ROOT`` plans every step (the root folder is
    never removed), ``rm ROOT/checkpoint_100/sae.safetensors`` that file."""
    root = tmp_path / "root"
    for step in (100, 200):
        write_checkpoint(root / f"checkpoint_{step}" / "sae.safetensors", step)
    rid = await _scanned(svc_unprotected, root)
    plan = await svc_unprotected.plan_targets(rid, [str(root)], force=True)
    assert _planned(plan) == {str(p) for p in root.glob("checkpoint_*/sae.safetensors")}
    assert plan.training_dirs == ()
    one = root / "checkpoint_100" / "sae.safetensors"
    plan = await svc_unprotected.plan_targets(rid, [str(one)], force=True)
    assert _planned(plan) == {str(one)}


async def test_rm_of_a_root_with_its_own_steps_and_a_training_beside_them_empties_both(
    tmp_path: Path, svc_unprotected: CheckpointService
) -> None:
    """The root's own steps never take the root, and never stop the folders of the training
    beside them from going: ``rm ROOT ROOT/zeta`` deletes every step, then ``zeta/`` is
    gone and the root is left, empty."""
    root = tmp_path / "root"
    for step in (100, 200):
        write_checkpoint(root / f"checkpoint_{step}" / "sae.safetensors", step)
    make_training(root, "zeta", [10, 20], ["layer_1"])
    rid = await _scanned(svc_unprotected, root)
    plan = await svc_unprotected.plan_targets(rid, [str(root), str(root / "zeta")], force=True)
    assert len(plan.steps) == 4
    result = await svc_unprotected.execute(plan)
    assert len(result.deleted) == 4 and result.ok
    assert root.is_dir() and list(root.iterdir()) == [], "zeta/ and its checkpoints/ went"


# ---------------------------------------------------------------- each file's verdict


@pytest.fixture
def hold_open() -> Iterator[Callable[[Path], int]]:
    """Open a file in another process (the planner ignores its own); returns the pid once
    the child says the file is open."""
    procs: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> int:
        code = (
            "import sys; f = open(sys.argv[1], 'rb'); print('open', flush=True); sys.stdin.read()"
        )
        p = subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline() == "open\n"
        return p.pid

    yield hold
    for p in procs:
        p.kill()
        p.wait()


async def test_each_file_of_a_selected_step_gets_its_own_verdict(
    tmp_path: Path, svc: CheckpointService, db_path: str, hold_open: Callable[[Path], int]
) -> None:
    """Per file, exactly one of: planned, or protected with its reason, its step and whether
    --force lifts it (or a second confirmation, for an open file), or listed as foreign.
    --force, --include-open and --include-foreign each lift only their own."""
    root = tmp_path / "root"
    layers = [f"layer_{i}" for i in range(6)]
    ck = make_training(root, "run", [100, 200, 300], layers=layers)
    s100, s300 = ck / "checkpoint_100", ck / "checkpoint_300"
    f = {i: s100 / f"layer_{i}" / "checkpoint.safetensors" for i in range(6)}
    (s100 / "notes.txt").write_text("mine")
    os.utime(s100 / "notes.txt", (OLD, OLD))
    recent = time.time() - 30
    os.utime(f[3], (recent, recent))
    rid = await _scanned(svc, root)
    ids, steps = _file_ids(db_path, root), _step_ids(db_path, root)
    _sql(db_path, "UPDATE files SET state = 'deleting' WHERE id = ?", (ids[str(f[1])],))
    _sql(db_path, "UPDATE files SET status = 'special' WHERE id = ?", (ids[str(f[2])],))
    _sql(db_path, "UPDATE files SET relpath = '../x' WHERE id = ?", (ids[str(f[5])],))
    pid = hold_open(f[4])
    sel = [steps[str(s100)], steps[str(s300)]]
    plan = await svc.plan_steps(rid, sel)
    step = str(s100)
    newest = "newest step with a valid checkpoint; --force to include"
    got = {
        (p.path, p.reason, p.file_id, p.step_id, p.needs_confirmation, p.step_path, p.forcable)
        for p in plan.protected
    }
    age = re.compile(r"modified 3[01] s ago \(may still be written\); --force to include")
    recent_reason = next(p.reason for p in plan.protected if p.path == str(f[3]))
    assert age.fullmatch(recent_reason), recent_reason
    sid = steps[step]
    assert got == {
        (str(f[1]), "already being deleted", ids[str(f[1])], sid, False, step, False),
        (str(f[2]), "not a regular file; never deleted", ids[str(f[2])], sid, False, step, False),
        (str(f[3]), recent_reason, ids[str(f[3])], sid, False, step, True),
        (
            str(f[4]),
            f"open in process {pid} ({_comm(pid)}); needs a second confirmation",
            ids[str(f[4])],
            sid,
            True,
            step,
            False,
        ),
        (
            f"{step}/../x",
            "refused: the index row is not a valid path inside the root",
            ids[str(f[5])],
            sid,
            False,
            step,
            False,
        ),
    } | {
        (str(p), newest, ids[str(p)], steps[str(s300)], False, str(s300), True)
        for p in s300.glob("*/checkpoint.safetensors")
    }
    assert [(x.path, x.size_bytes, x.step_id) for x in plan.foreign] == [
        (str(s100 / "notes.txt"), 4, sid)
    ]
    assert [(s.path, s.whole, s.indexed_files, s.training, s.step) for s in plan.steps] == [
        (step, False, 7, "run", 100)
    ]
    assert _planned(plan) == {str(f[0])}
    lifted = await svc.plan_steps(rid, sel, force=True, include_open=True, include_foreign=True)
    assert _planned(lifted) == {str(f[0]), str(f[3]), str(f[4]), str(s100 / "notes.txt")} | {
        str(p) for p in s300.glob("*/checkpoint.safetensors")
    }
    assert [(s.path, s.whole) for s in lifted.steps] == [(step, False), (str(s300), True)]
    assert {p.path for p in lifted.protected} == {str(f[1]), str(f[2]), f"{step}/../x"}
    assert not lifted.foreign


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


async def test_damaged_file_rows_are_refused_by_path_and_their_siblings_still_planned(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Each damaged column is named in the refusal; an empty file (size 0) is not damage."""
    root = tmp_path / "root"
    layers = [f"layer_{i}" for i in range(6)]
    ck = make_training(root, "run", [100, 200, 300], layers=layers)
    s100, s200 = ck / "checkpoint_100", ck / "checkpoint_200"
    (s100 / "empty.txt").write_bytes(b"")
    os.utime(s100 / "empty.txt", (OLD, OLD))
    rid = await _scanned(svc_unprotected, root)
    ids, steps = _file_ids(db_path, root), _step_ids(db_path, root)
    f = {i: str(s100 / f"layer_{i}" / "checkpoint.safetensors") for i in range(6)}
    damage = {
        0: ("size_bytes = 'x'", "size is 'x'"),
        1: ("relpath = x'00ff'", "relpath is not text"),
        2: ("nlink = -1", "nlink is -1"),
        3: ("status = 'weird'", "status is 'weird'"),
        4: ("state = 'gone'", "state is 'gone'"),
    }
    for i, (change, _why) in damage.items():
        _sql(db_path, f"UPDATE files SET {change} WHERE id = ?", (ids[f[i]],))
    _sql(db_path, "UPDATE steps SET pinned = 2 WHERE id = ?", (steps[str(s200)],))
    sel = [steps[str(s100)], steps[str(s200)]]
    plan = await svc_unprotected.plan_steps(rid, sel, force=True, include_foreign=True)
    expected = {
        (f[i] if i != 1 else f"{root} (file #{ids[f[1]]})", why, ids[f[i]])
        for i, (_change, why) in damage.items()
    } | {(str(p), "pinned is 2", ids[str(p)]) for p in s200.glob("*/checkpoint.safetensors")}
    assert {(p.path, p.reason, p.file_id) for p in plan.protected} == {
        (path, f"refused: malformed index row ({why})", fid) for path, why, fid in expected
    }
    assert _planned(plan) == {f[5], str(s100 / "empty.txt")}


# ------------------------------------------------------------- empty steps, duplicates


async def test_selected_empty_step_folders_are_planned_to_go_unless_protected(
    tmp_path: Path, svc: CheckpointService, db_path: str
) -> None:
    """A bare mkdir older than the newest valid step is planned as a step with no file (its
    folder goes); one newer may be a save in progress (protected, --force lifts it); one
    whose index row is not a valid step path is refused. The run removes only the first."""
    root = tmp_path / "root"
    ck = make_training(root, "run", [200, 300], layers=["layer_0"])
    for step in (100, 400, 500):
        (ck / f"checkpoint_{step}").mkdir()
    rid = await _scanned(svc, root)
    steps = _step_ids(db_path, root)
    _sql(
        db_path,
        "UPDATE steps SET relpath = '../checkpoint_500' WHERE id = ?",
        (steps[str(ck / "checkpoint_500")],),
    )
    sel = [steps[str(ck / f"checkpoint_{n}")] for n in (100, 400, 500)]
    plan = await svc.plan_steps(rid, sel)
    assert [(s.path, s.files, s.whole, s.training, s.step) for s in plan.steps] == [
        (str(ck / "checkpoint_100"), (), True, "run", 100)
    ]
    in_progress = "newer than the newest valid step: may be in progress; --force to include"
    assert {
        (p.path, p.reason, p.file_id, p.step_id, p.step_path, p.forcable) for p in plan.protected
    } == {
        (str(ck / "checkpoint_400"), in_progress, None, sel[1], str(ck / "checkpoint_400"), True),
        (f"{root}/../checkpoint_500", "refused: not a valid step path", None, sel[2], "", False),
    }
    forced = await svc.plan_steps(rid, sel, force=True)
    assert [s.path for s in forced.steps] == [str(ck / f"checkpoint_{n}") for n in (100, 400)]
    result = await svc.execute(plan)
    assert result.removed_dirs == (str(ck / "checkpoint_100"),)
    assert sorted(p.name for p in ck.iterdir()) == [
        "checkpoint_200",
        "checkpoint_300",
        "checkpoint_400",
        "checkpoint_500",
    ]


async def test_a_file_named_twice_is_planned_once_and_the_rest_still_planned(
    tmp_path: Path, svc_unprotected: CheckpointService
) -> None:
    """``rm STEP STEP/FILE LATER_STEP``: the file is planned once, the later step whole."""
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200, 300], layers=["layer_0", "layer_1"])
    rid = await _scanned(svc_unprotected, root)
    one = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    targets = [str(ck / "checkpoint_100"), str(one), str(ck / "checkpoint_200")]
    plan = await svc_unprotected.plan_targets(rid, targets, force=True)
    expected = {str(p) for n in (100, 200) for p in (ck / f"checkpoint_{n}").rglob("*.safetensors")}
    assert sorted(os.path.join(plan.root, *f.relparts) for f in plan.files) == sorted(expected)
    assert [(s.step, s.whole) for s in plan.steps] == [(100, True), (200, True)]
    assert plan.training_dirs == ()


# ------------------------------------------------------- the original service, pin by path


async def test_delete_checkpoint_never_deletes_an_open_or_a_foreign_file(
    tmp_path: Path,
    svc_unprotected: CheckpointService,
    db_path: str,
    hold_open: Callable[[Path], int],
) -> None:
    """The original contract's one-file delete plans with --force only: a file open in another
    process and a file its layout does not name are refused (False) and stay on disk."""
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=["layer_0", "layer_1"])
    notes = ck / "checkpoint_100" / "notes.txt"
    notes.write_text("mine")
    os.utime(notes, (OLD, OLD))
    await _scanned(svc_unprotected, root)
    ids = _file_ids(db_path, root)
    busy = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    hold_open(busy)
    free = ck / "checkpoint_100" / "layer_1" / "checkpoint.safetensors"
    async with svc_unprotected.db.sessions() as session:
        assert await svc_unprotected.delete_checkpoint(session, ids[str(busy)]) is False
        assert await svc_unprotected.delete_checkpoint(session, ids[str(notes)]) is False
        assert await svc_unprotected.delete_checkpoint(session, ids[str(free)]) is True
    assert busy.is_file() and notes.read_text() == "mine" and not free.exists()


async def test_pin_by_path_names_only_indexed_steps_of_the_root(
    tmp_path: Path, svc: CheckpointService, db_path: str
) -> None:
    """``pin ROOT/STEP`` pins that folder; the same relative path under another folder, or a
    folder of the root that is not a step, is refused with one line and pins nothing."""
    root = tmp_path / "root"
    make_training(root, "t", [100, 200], layers=["layer_0"])
    twin = tmp_path / "other" / "t" / "checkpoints" / "checkpoint_100"
    twin.mkdir(parents=True)
    rid = await _scanned(svc, root)
    step = root / "t" / "checkpoints" / "checkpoint_100"
    for target in (twin, root / "t", root / "t" / "checkpoints" / "checkpoint_300"):
        with pytest.raises(TargetError) as err:
            await svc.set_pinned_paths(rid, [str(target)], True)
        assert str(err.value) == (
            f"{target} is not an indexed step folder under {root} "
            f"(run `ckpt-tui scan {root}` first?)"
        )
    assert _sql(db_path, "SELECT path FROM pins") == []
    assert await svc.set_pinned_paths(rid, [str(step)], True) == [str(step)]
    assert _sql(db_path, "SELECT path FROM pins") == [(str(step),)]


async def test_marked_files_follow_force_include_open_and_include_foreign(
    tmp_path: Path, svc: CheckpointService, db_path: str, hold_open: Callable[[Path], int]
) -> None:
    """Marked files (the TUI's plan): the newest step's file, a file open elsewhere and a
    foreign file are planned exactly when --force, --include-open, --include-foreign say."""
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=["layer_0"])
    notes = ck / "checkpoint_100" / "notes.txt"
    notes.write_text("mine")
    os.utime(notes, (OLD, OLD))
    rid = await _scanned(svc, root)
    ids = _file_ids(db_path, root)
    newest = str(ck / "checkpoint_200" / "layer_0" / "checkpoint.safetensors")
    busy = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    hold_open(busy)
    marked = [ids[newest], ids[str(busy)], ids[str(notes)]]
    cases = {
        (False, False, False): set(),
        (True, False, False): {newest},
        (False, True, False): {str(busy)},
        (False, False, True): {str(notes)},
        (True, True, True): {newest, str(busy), str(notes)},
    }
    for (force, include_open, include_foreign), expected in cases.items():
        plan = await svc.plan_files(
            rid, marked, force=force, include_open=include_open, include_foreign=include_foreign
        )
        assert _planned(plan) == expected, (force, include_open, include_foreign)


async def test_a_training_named_with_capital_x_resolves(
    tmp_path: Path, svc: CheckpointService, db_path: str
) -> None:
    """Only slashes are stripped from a --training value, never its letters."""
    root = tmp_path / "root"
    make_training(root, "XLrunX", [100], layers=["layer_0"])
    make_training(root, "other", [100], layers=["layer_0"])
    rid = await _scanned(svc, root)
    (tid,) = (r[0] for r in _sql(db_path, "SELECT id FROM trainings WHERE name = 'XLrunX'"))
    assert await svc.resolve_trainings(rid, ["/XLrunX/"]) == {tid}


async def test_an_ambiguous_name_shared_with_the_roots_own_steps_lists_them_as_dot(
    tmp_path: Path, svc: CheckpointService
) -> None:
    """Steps in the root itself are a training named by the root's folder; when another
    training has that name too, the refusal lists the root's own steps as '.'."""
    root = tmp_path / "exp"
    write_checkpoint(root / "checkpoint_1" / "sae.safetensors", 1)
    make_training(root, "exp", [5], layers=["layer_0"])  # exp/checkpoints/: also "exp"
    rid = await _scanned(svc, root)
    with pytest.raises(TargetError) as err:
        await svc.resolve_trainings(rid, ["exp"])
    assert str(err.value) == (
        f"training name 'exp' is ambiguous under {root}: ., exp/checkpoints; "
        "give one of these paths"
    )


async def test_rm_targets_follow_include_open_and_include_foreign(
    tmp_path: Path, svc_unprotected: CheckpointService, hold_open: Callable[[Path], int]
) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=["layer_0"])
    step = ck / "checkpoint_100"
    notes = step / "notes.txt"
    notes.write_text("mine")
    os.utime(notes, (OLD, OLD))
    rid = await _scanned(svc_unprotected, root)
    busy = step / "layer_0" / "checkpoint.safetensors"
    hold_open(busy)
    for include_open, include_foreign, expected in (
        (False, False, set()),
        (True, False, {str(busy)}),
        (False, True, {str(notes)}),
    ):
        plan = await svc_unprotected.plan_targets(
            rid, [str(step)], include_open=include_open, include_foreign=include_foreign
        )
        assert _planned(plan) == expected, (include_open, include_foreign)


async def test_rm_of_a_thousand_and_one_steps_or_files_plans_every_one(
    tmp_path: Path, svc_unprotected: CheckpointService
) -> None:
    """Targets past two IN (...) chunks: 1,001 step folders, or their 1,001 files."""
    root = tmp_path / "root"
    tiny = (2).to_bytes(8, "little") + b"{}"  # a valid safetensors file with no tensor
    files = []
    for n in range(1, 1002):
        path = root / "run" / f"checkpoint_{n}" / "sae.safetensors"
        path.parent.mkdir(parents=True)
        path.write_bytes(tiny)
        os.utime(path, (OLD, OLD))
        files.append(str(path))
    empties = {}
    for name in ("aa", "zz"):  # bare mkdirs of two more trainings, listed first and last
        empties[name] = root / name / "checkpoint_1"
        empties[name].mkdir(parents=True)
        write_checkpoint(root / name / "checkpoint_2" / "sae.safetensors", 2)
    rid = await _scanned(svc_unprotected, root)
    targets = [str(empties["aa"])] + [os.path.dirname(f) for f in files] + [str(empties["zz"])]
    by_step = await svc_unprotected.plan_targets(rid, targets)
    assert _planned(by_step) == set(files) and len(by_step.steps) == 1003
    assert [(s.path, s.files, s.whole) for s in by_step.steps if s.training != "run"] == [
        (str(empties["aa"]), (), True),
        (str(empties["zz"]), (), True),
    ]
    by_file = await svc_unprotected.plan_targets(rid, files)
    assert _planned(by_file) == set(files)


async def test_best_loss_without_mistudio_keeps_the_steps_whose_files_lack_it(
    tmp_path: Path, svc_unprotected: CheckpointService
) -> None:
    """``--best loss`` with no miStudio database and no file carrying ``loss``: every valid
    step is kept as unknown (not guessed), nothing is planned."""
    root = tmp_path / "root"
    make_training(root, "run", [100, 200, 300], layers=["layer_0"])
    rid = await _scanned(svc_unprotected, root)
    rules = Rules(keep=1, best=Best("loss"))
    plan = await svc_unprotected.plan_retention(rid, 1, rules=rules, force=True)
    unknown = "no loss: kept, not guessed"
    assert [(k.step, k.reasons) for k in plan.keep] == [
        (100, (unknown,)),
        (200, (unknown,)),
        (300, ("newest", unknown)),
    ]
    assert plan.empty


async def test_prune_force_and_include_open_reach_the_files_of_old_steps(
    tmp_path: Path, svc: CheckpointService, hold_open: Callable[[Path], int]
) -> None:
    """A file written 30 s ago in an old step is protected until --force; a file open in
    another process until --include-open (force does not lift it)."""
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200, 300], layers=["layer_0"])
    recent = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    when = time.time() - 30
    os.utime(recent, (when, when))
    busy = ck / "checkpoint_200" / "layer_0" / "checkpoint.safetensors"
    rid = await _scanned(svc, root)
    hold_open(busy)
    cases = {
        (False, False): set(),
        (True, False): {str(recent)},
        (True, True): {str(recent), str(busy)},
    }
    for (force, include_open), expected in cases.items():
        plan = await svc.plan_retention(rid, 1, force=force, include_open=include_open)
        assert _planned(plan) == expected, (force, include_open)


async def test_a_hard_link_across_trainings_is_counted_on_the_step_deleted_last(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Both links of one file planned, in steps of two trainings: the plan counts its bytes
    once, on the step of the link deleted last (trainings in name order, then steps); the
    run frees them once, as the filesystem's st_size says."""
    root = tmp_path / "root"
    a = make_training(root, "a", [200, 300], layers=["layer_0"])
    b = make_training(root, "b", [100, 300], layers=["layer_0"])
    first = a / "checkpoint_200" / "layer_0" / "checkpoint.safetensors"
    last = b / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    last.unlink()
    os.link(first, last)
    size = os.stat(first).st_size
    rid = await _scanned(svc_unprotected, root)
    steps = _step_ids(db_path, root)
    plan = await svc_unprotected.plan_steps(
        rid, [steps[str(a / "checkpoint_200")], steps[str(b / "checkpoint_100")]]
    )
    assert [(s.path, s.size_bytes) for s in plan.steps] == [
        (str(a / "checkpoint_200"), 0),
        (str(b / "checkpoint_100"), size),
    ]
    assert plan.bytes == size
    result = await svc_unprotected.execute(plan)
    assert result.freed_bytes == size and not first.exists() and not last.exists()


async def test_with_open_file_protection_off_an_open_file_is_planned(
    tmp_path: Path, db_path: str, hold_open: Callable[[Path], int]
) -> None:
    """Protection(open_files=False): the plan does not look for open files at all."""
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=["layer_0"])
    busy = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    off = Protection(newest_step=False, recent_seconds=0, open_files=False)
    svc = await CheckpointService.open(db_path, protection=off)
    try:
        rid = await _scanned(svc, root)
        hold_open(busy)
        plan = await svc.plan_steps(rid, _step_ids(db_path, root).values())
    finally:
        await svc.close()
    assert str(busy) in _planned(plan) and not plan.protected


async def test_a_training_with_no_valid_step_yet_is_protected_until_forced(
    tmp_path: Path, svc: CheckpointService, db_path: str
) -> None:
    """Its only step is a save cut short: it may be in progress, so it is not planned
    without --force, with the reason named."""
    root = tmp_path / "root"
    ck = make_training(root, "run", [100], layers=["layer_0"])
    cut = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    with open(cut, "r+b") as f:
        f.truncate(40)
    os.utime(cut, (OLD, OLD))
    rid = await _scanned(svc, root)
    sid = _step_ids(db_path, root)[str(ck / "checkpoint_100")]
    plan = await svc.plan_steps(rid, [sid])
    assert plan.empty
    assert [(p.path, p.reason, p.forcable) for p in plan.protected] == [
        (
            str(cut),
            "no valid step in this training yet: may be in progress; --force to include",
            True,
        )
    ]
    assert _planned(await svc.plan_steps(rid, [sid], force=True)) == {str(cut)}


async def test_the_folders_emptied_with_a_training_stop_below_the_root(
    tmp_path: Path, svc_unprotected: CheckpointService
) -> None:
    """A training all of whose steps go takes its steps' folder and, when that is
    ``checkpoints/``, the training folder: never a folder above it, never the root."""
    svc = svc_unprotected
    cases = {
        # the root is the training folder: its checkpoints/ goes, the root stays
        "own": ("", True, (("checkpoints",),)),
        # a training two folders down: the group folder above it stays
        "nested": ("g/a", True, (("g", "a", "checkpoints"), ("g", "a"))),
        # steps straight in the training folder: that folder goes, not its parent
        "bare": ("g/b", False, (("g", "b"),)),
    }
    for name, (rel, checkpoints_dir, expected) in cases.items():
        root = tmp_path / name
        base = root / rel if rel else root
        make_training(
            base.parent, base.name, [100, 200], ["layer_1"], checkpoints_dir=checkpoints_dir
        )
        rid = await _scanned(svc, root)
        plan = await svc.plan_targets(rid, [str(base)], force=True)
        assert len(plan.steps) == 2, name
        assert plan.training_dirs == expected, name


async def test_a_root_id_not_in_the_index_is_refused_by_number(svc: CheckpointService) -> None:
    with pytest.raises(TargetError) as err:
        await svc.plan_targets(4242, ["/nowhere"], force=True)
    assert str(err.value) == "root #4242 is not in the index"


async def test_three_links_of_one_file_are_counted_once_on_the_last_step(
    tmp_path: Path, svc_unprotected: CheckpointService, db_path: str
) -> None:
    """Three links of one file, each in a planned step: its bytes count once, on the step
    of the link deleted last, never on the middle one."""
    root = tmp_path / "root"
    ck = make_training(root, "a", [100, 200, 300, 400], layers=["layer_0"])
    first = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    for step in (200, 300):
        other = ck / f"checkpoint_{step}" / "layer_0" / "checkpoint.safetensors"
        other.unlink()
        os.link(first, other)
    size = os.stat(first).st_size
    rid = await _scanned(svc_unprotected, root)
    steps = _step_ids(db_path, root)
    wanted = [steps[str(ck / f"checkpoint_{n}")] for n in (100, 200, 300)]
    plan = await svc_unprotected.plan_steps(rid, wanted)
    assert [s.size_bytes for s in plan.steps] == [0, 0, size]
    result = await svc_unprotected.execute(plan)
    assert result.freed_bytes == size and not first.exists()


async def test_a_future_mtime_is_recent_at_0_s_and_never_hides_an_empty_step_after_it(
    tmp_path: Path, svc: CheckpointService, db_path: str
) -> None:
    """Files stamped an hour ahead (a skewed clock on a shared filesystem) may still be being
    written: kept as modified 0 s ago, never a negative or rounded-up age. Their step is then
    planned with no file, and a bare mkdir selected after it is still planned to go."""
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 300], layers=["layer_0", "layer_1"])
    (ck / "checkpoint_200").mkdir()
    ahead = time.time() + 3600
    skewed = sorted((ck / "checkpoint_100").glob("*/checkpoint.safetensors"))
    for p in skewed:
        os.utime(p, (ahead, ahead))
    rid = await _scanned(svc, root)
    steps = _step_ids(db_path, root)
    s100, s200 = steps[str(ck / "checkpoint_100")], 1_000_000
    # Ids follow the directory order of the scan: give the empty step the larger one, so it
    # comes after the step with kept files in the plan's order.
    _sql(db_path, "UPDATE steps SET id = ? WHERE id = ?", (s200, steps[str(ck / "checkpoint_200")]))
    plan = await svc.plan_steps(rid, [s100, s200])
    reason = "modified 0 s ago (may still be written); --force to include"
    assert sorted((p.path, p.reason) for p in plan.protected) == [(str(p), reason) for p in skewed]
    assert [(s.path, s.files) for s in plan.steps] == [(str(ck / "checkpoint_200"), ())]
    await svc.execute(plan)
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint_100", "checkpoint_300"]
    assert all(p.exists() for p in skewed)

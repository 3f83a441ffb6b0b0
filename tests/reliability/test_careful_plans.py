"""The plan a careful user expects (issue "Careful plans"): ordinary trees, real files.

Every test drives the real CLI (click's runner, in-process) or the service on real files in
``tmp_path`` and checks the disk itself afterwards, never only the index that made the plan.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from ckpt_tui.cli import main
from ckpt_tui.retention import Best, Rules, StepFacts, decide
from tests.conftest import OLD, make_training, write_checkpoint


def cli(*args: str, db: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--db", db], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def dry(root: Path, db: str, *args: str) -> dict:
    code, out, err = cli("prune", str(root), *args, "--dry-run", "--json", db=db)
    assert code == 0, err
    return json.loads(out)


def steps_on_disk(checkpoints: Path) -> list[str]:
    return sorted(p.name for p in checkpoints.iterdir()) if checkpoints.exists() else []


def disk_usage(root: Path) -> tuple[int, int]:
    """(apparent, allocated) bytes of every regular file under root, each inode once."""
    seen: set[tuple[int, int]] = set()
    apparent = allocated = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen or not os.path.isfile(os.path.join(dirpath, name)):
                continue
            seen.add((st.st_dev, st.st_ino))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "index.sqlite3")


# 1. Keep rules and the newest protection count valid steps only --------------------------


def _cut_short_and_bare(root: Path) -> Path:
    """Steps 100-300 valid, 400 a save cut short (40 bytes), 500 a bare mkdir."""
    ck = make_training(root, "run", [100, 200, 300, 400], layers=("layer_0",))
    truncated = ck / "checkpoint_400" / "layer_0" / "checkpoint.safetensors"
    with open(truncated, "r+b") as f:
        f.truncate(40)
    os.utime(truncated, (OLD, OLD))
    (ck / "checkpoint_500").mkdir()
    return ck


def test_keep_counts_valid_steps_and_keeps_what_may_be_in_progress(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = _cut_short_and_bare(root)
    plan = dry(root, db, "--keep", "2")
    reasons = {k["step"]: k["reasons"] for k in plan["keep"]}
    assert reasons[300] == ["newest"] and reasons[200] == ["keep newest 2"]
    assert "may be in progress" in reasons[400][0] and "may be in progress" in reasons[500][0]
    assert [d["step"] for d in plan["delete"]] == [100]
    code, _, err = cli("prune", str(root), "--keep", "2", "--yes", db=db)
    assert code == 0, err
    assert steps_on_disk(ck) == [
        "checkpoint_200",
        "checkpoint_300",
        "checkpoint_400",
        "checkpoint_500",
    ]


def test_a_bare_mkdir_never_costs_the_last_good_step(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200, 300], layers=("layer_0",))
    (ck / "checkpoint_400").mkdir()
    code, _, err = cli("prune", str(root), "--keep", "1", "--every", "1000", "--yes", db=db)
    assert code == 0, err
    assert steps_on_disk(ck) == ["checkpoint_300", "checkpoint_400"]
    # rm of the newest valid step is refused as well (not only prune)
    code, _, err = cli("rm", str(root), str(ck / "checkpoint_300"), "--yes", db=db)
    assert code == 1 and "newest step" in err and (ck / "checkpoint_300").is_dir()


def test_broken_steps_older_than_the_newest_valid_one_are_planned_with_their_state(
    tmp_path: Path, db: str
) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200, 300], layers=("layer_0", "layer_1"))
    (ck / "checkpoint_200" / "layer_1" / "checkpoint.safetensors").unlink()  # a lost layer
    _code, out, _ = cli("ls", str(root), "--json", db=db)
    steps = {s["step"]: s for s in json.loads(out)["trainings"][0]["steps"]}
    assert steps[200]["status"] == "incomplete" and "1 of 2 layers" in steps[200]["problems"]
    plan = dry(root, db, "--keep", "2")
    # 200 is broken: "keep newest 2" skips it and keeps 100, the second valid step
    assert {k["step"] for k in plan["keep"]} == {300, 100}
    assert [d["step"] for d in plan["delete"]] == [200]


# 2. A step is recognised by its content, not by a numeric name -----------------------


def test_numeric_folders_that_are_not_steps_are_never_pruned(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=("layer_0",))
    results = ck / "eval" / "1000" / "results.json"  # evaluation output, no weights
    results.parent.mkdir(parents=True)
    results.write_text('{"ce_loss": 2.1}')
    sweep = ck / "sweep" / "1"
    for step in (100, 200):
        write_checkpoint(sweep / f"checkpoint_{step}" / "layer_0" / "checkpoint.safetensors", step)
    code, _, err = cli("prune", str(root), "--keep", "1", "--yes", db=db)
    assert code == 0, err
    assert results.is_file(), "evaluation output is not a step"
    assert steps_on_disk(sweep) == ["checkpoint_200"], "the sweep run keeps its newest step"
    assert (ck / "checkpoint_200").is_dir() and not (ck / "checkpoint_100").exists()


# 3. Only checkpoint artifacts are deleted; everything else stays and is named -------------


def test_foreign_files_are_kept_named_and_deleted_only_when_asked(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200, 300], layers=("layer_0", "layer_1"))
    notes = ck / "checkpoint_100" / "notes.txt"
    notes.write_text("lr 3e-4 diverged after this\n")
    readme = ck / "checkpoint_100" / "layer_1" / "README.md"
    readme.write_text("# layer 1\n")
    repo = ck / "checkpoint_200" / "analysis" / ".git"
    repo.mkdir(parents=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    for p in (notes, readme, repo / "HEAD"):
        os.utime(p, (OLD, OLD))
    plan = dry(root, db, "--keep", "1")
    assert sorted(f["path"] for f in plan["foreign"]) == sorted(
        str(p) for p in (notes, readme, repo / "HEAD")
    )
    code, out, err = cli("prune", str(root), "--keep", "1", "--yes", db=db)
    assert code == 0, err
    assert notes.is_file() and readme.is_file() and (repo / "HEAD").is_file()
    assert not (ck / "checkpoint_100" / "layer_0").exists(), "the checkpoint files went"
    assert not (ck / "checkpoint_100" / "layer_1" / "checkpoint.safetensors").exists()
    # the text plan said so before anything happened
    code, out, _ = cli("prune", str(root), "--keep", "1", "--dry-run", db=db)
    assert "foreign files" in out and "checkpoint_100/notes.txt" in out
    # asked for after being shown: they go, and so do their folders and the step folders
    code, _, err = cli("prune", str(root), "--keep", "1", "--include-foreign", "--yes", db=db)
    assert code == 0, err
    assert steps_on_disk(ck) == ["checkpoint_300"]


# 4. Read-only never deletes -------------------------------------------------------------


def _interrupt(db: str, root: Path) -> list[Path]:
    """A prune that committed its claim on checkpoint_100, unlinked one file and died."""
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT files.relpath, steps.relpath FROM files JOIN steps ON steps.id = files.step_id "
        "WHERE steps.relpath LIKE '%checkpoint_100'"
    ).fetchall()
    con.execute(
        "UPDATE files SET state='deleting', claimed_at=1700000000 WHERE step_id IN "
        "(SELECT id FROM steps WHERE relpath LIKE '%checkpoint_100')"
    )
    con.commit()
    con.close()
    paths = [root / step / rel for rel, step in rows]
    paths[0].unlink()
    return paths[1:]


def test_read_only_commands_report_an_interrupted_deletion_and_never_finish_it(
    tmp_path: Path, db: str
) -> None:
    root = tmp_path / "root"
    make_training(root, "run", [100, 200, 300])
    assert cli("scan", str(root), db=db)[0] == 0
    left = _interrupt(db, root)
    before = sorted(str(p) for p in root.rglob("*"))
    for args in (
        ("ls", str(root)),
        ("scan", str(root)),
        ("prune", str(root), "--keep", "1", "--dry-run"),
        ("rm", str(root), str(root / "run" / "checkpoints" / "checkpoint_200"), "--dry-run"),
    ):
        code, _, err = cli(*args, db=db)
        assert code == 0, err
        assert "interrupted deletion is pending" in err and "3 files in 1 steps" in err, args
        assert sorted(str(p) for p in root.rglob("*")) == before, f"{args} touched the disk"
    # a deleting command finishes it, and says so
    code, _out, err = cli("prune", str(root), "--keep", "2", "--yes", db=db)
    assert code == 0, err
    assert "finishing it first" in err and "finished an interrupted deletion" not in err
    assert not any(p.exists() for p in left)
    assert not (root / "run" / "checkpoints" / "checkpoint_100").exists()
    code, _, err = cli("ls", str(root), db=db)
    assert "interrupted" not in err


def test_the_read_only_tui_never_finishes_an_interrupted_deletion(tmp_path: Path, db: str) -> None:
    import asyncio

    from ckpt_tui.tui.app import CkptApp

    root = tmp_path / "root"
    make_training(root, "run", [100, 200, 300])
    assert cli("scan", str(root), db=db)[0] == 0
    left = _interrupt(db, root)

    async def browse() -> int:
        app = CkptApp(str(root), db, read_only=True)
        async with app.run_test(size=(100, 30)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            return len(app.model.trainings)

    assert asyncio.run(browse()) == 1, "the browser loaded the index"
    assert all(p.exists() for p in left)


# 5. Identity by path: pins, trainings --------------------------------------------------


def test_a_pin_belongs_to_the_folder_under_every_root_and_survives_a_rename(
    tmp_path: Path, db: str
) -> None:
    a = tmp_path / "A"
    ck = make_training(a, "train", [100, 200, 300], layers=("layer_0",))
    code, out, err = cli("pin", str(a / "train"), str(ck / "checkpoint_100"), db=db)
    assert code == 0 and "pinned" in out, err
    code, out, _ = cli("ls", str(a / "train"), "--json", db=db)
    pins = {s["step"]: s["pinned"] for s in json.loads(out)["trainings"][0]["steps"]}
    assert pins == {100: True, 200: False, 300: False}
    # pinned while A/train was the root; pruned from A: still kept
    plan = dry(a, db, "--keep", "1")
    assert {k["step"]: k["reasons"] for k in plan["keep"]}[100] == ["pinned"]
    # renamed away (a re-scan forgets it) and back: the pin holds
    (ck / "checkpoint_100").rename(tmp_path / "away")
    assert cli("scan", str(a), db=db)[0] == 0
    (tmp_path / "away").rename(ck / "checkpoint_100")
    assert cli("scan", str(a), db=db)[0] == 0
    code, _, err = cli("prune", str(a), "--keep", "1", "--yes", db=db)
    assert code == 0, err
    assert steps_on_disk(ck) == ["checkpoint_100", "checkpoint_300"]
    code, out, _ = cli("unpin", str(a), str(ck / "checkpoint_100"), db=db)
    assert code == 0 and "unpinned" in out
    assert cli("prune", str(a), "--keep", "1", "--yes", db=db)[0] == 0
    assert steps_on_disk(ck) == ["checkpoint_300"]
    code, _, err = cli("pin", str(a), str(tmp_path / "nowhere"), db=db)
    assert code == 1 and "not an indexed step folder" in err


def test_training_names_are_paths_and_an_ambiguous_name_is_refused(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    alice = make_training(root / "alice", "exp1", [1, 2, 3], layers=("layer_0",))
    bob = make_training(root / "bob", "exp1", [1, 2, 3], layers=("layer_0",))
    code, out, err = cli("prune", str(root), "--keep", "1", "--training", "exp1", "--yes", db=db)
    assert code == 1
    assert "ambiguous" in err and "alice/exp1" in err and "bob/exp1" in err
    assert len(steps_on_disk(alice)) == 3 and len(steps_on_disk(bob)) == 3, "nothing deleted"
    code, _, err = cli(
        "prune", str(root), "--keep", "1", "--training", "alice/exp1", "--yes", db=db
    )
    assert code == 0, err
    assert steps_on_disk(alice) == ["checkpoint_3"] and len(steps_on_disk(bob)) == 3
    code, out, _ = cli("ls", str(root), "--json", db=db)
    assert sorted(t["name"] for t in json.loads(out)["trainings"]) == ["alice/exp1", "bob/exp1"]


def test_two_families_of_steps_in_one_folder_are_two_trainings(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    a = make_training(root, "exp", [10, 20], layers=("layer_0",))  # exp/checkpoints/...
    b = make_training(root, "exp", [1, 2], layers=("layer_0",), checkpoints_dir=False)
    _code, out, _ = cli("ls", str(root), "--json", db=db)
    names = sorted(t["name"] for t in json.loads(out)["trainings"])
    assert names == ["exp", "exp/checkpoints"]
    assert cli("prune", str(root), "--keep", "1", "--yes", db=db)[0] == 0
    assert steps_on_disk(a) == ["checkpoint_20"]
    assert sorted(p.name for p in b.glob("checkpoint_*")) == ["checkpoint_2"]


# 6. Bytes that are true ----------------------------------------------------------------


def test_hard_links_inside_the_plan_free_their_bytes_once(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200, 300], layers=("layer_0",))
    first = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    twin = ck / "checkpoint_200" / "layer_0" / "checkpoint.safetensors"
    twin.unlink()
    os.link(first, twin)  # one file, a link in each pruned step
    plan = dry(root, db, "--keep", "1")
    before = disk_usage(root)
    code, out, err = cli("prune", str(root), "--keep", "1", "--yes", "--json", db=db)
    assert code == 0, err
    done = json.loads(out)
    after = disk_usage(root)
    assert plan["bytes"] == done["freed_bytes"] == before[0] - after[0] > 0
    assert plan["disk_bytes"] == done["freed_disk_bytes"] == before[1] - after[1] > 0


def test_a_hard_link_outside_the_plan_frees_nothing(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=("layer_0",))
    target = ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors"
    os.link(target, tmp_path / "outside.safetensors")
    plan = dry(root, db, "--keep", "1")
    code, out, err = cli("prune", str(root), "--keep", "1", "--yes", "--json", db=db)
    assert code == 0, err
    assert plan["bytes"] == json.loads(out)["freed_bytes"] == 0
    assert (tmp_path / "outside.safetensors").is_file()


def test_sparse_files_promise_allocated_bytes_beside_apparent(tmp_path: Path, db: str) -> None:
    from ckpt_tui.demo import sae_tensors, write_sparse_safetensors

    root = tmp_path / "root"
    ck = root / "run" / "checkpoints"
    for step in (1, 2, 3):
        p = ck / f"checkpoint_{step}" / "layer_0" / "checkpoint.safetensors"
        write_sparse_safetensors(p, sae_tensors(), {"step": str(step)})
        os.utime(p, (OLD, OLD))
    plan = dry(root, db, "--keep", "1")
    assert plan["disk_bytes"] < plan["bytes"], "sparse: far fewer blocks than bytes"
    before = disk_usage(root)
    code, out, err = cli("prune", str(root), "--keep", "1", "--yes", "--json", db=db)
    assert code == 0, err
    done, after = json.loads(out), disk_usage(root)
    assert done["freed_disk_bytes"] == plan["disk_bytes"] == before[1] - after[1]
    assert done["freed_bytes"] == plan["bytes"] == before[0] - after[0]
    code, out, _ = cli("prune", str(root), "--keep", "1", "--dry-run", db=db)
    assert "on disk" in out or "nothing" in out


def test_deleted_counts_only_what_this_run_unlinked(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200, 300], layers=("layer_0", "layer_1"))
    assert cli("scan", str(root), db=db)[0] == 0
    (ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors").unlink()  # gone by hand
    changed = ck / "checkpoint_200" / "layer_1" / "checkpoint.safetensors"
    changed.write_bytes(changed.read_bytes())  # rewritten: same size, new mtime
    code, out, _err = cli("prune", str(root), "--keep", "1", "--yes", "--json", db=db)
    assert code == 1, "a changed file was not deleted: the run reports a failure"
    doc = json.loads(out)
    assert len(doc["deleted"]) == 2
    assert [d["path"] for d in doc["already_gone"]] == [
        str(ck / "checkpoint_100" / "layer_0" / "checkpoint.safetensors")
    ]
    assert [d["path"] for d in doc["changed"]] == [str(changed)]
    assert changed.is_file()


# 7. Bad values and protected targets -----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--recent", "inf"),
        ("--recent", "nan"),
        ("--recent", "1e300"),
        ("--recent", "-5"),
        ("--recent", "soon"),
        ("--newer-than", "9" * 400),
        ("--newer-than", "-1h"),
    ],
)
def test_bad_values_get_one_line_and_delete_nothing(
    tmp_path: Path, db: str, args: tuple[str, str]
) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=("layer_0",))
    code, _out, err = cli("prune", str(root), "--keep", "1", *args, "--yes", db=db)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("ckpt-tui: ")
    assert "Traceback" not in err
    assert args[0] in err or "duration" in err
    assert steps_on_disk(ck) == ["checkpoint_100", "checkpoint_200"]


def test_rm_of_only_protected_targets_deletes_nothing_and_says_why(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=("layer_0",))
    code, _out, err = cli("rm", str(root), str(ck / "checkpoint_200"), "--yes", "--json", db=db)
    assert code == 1
    assert "every target is protected" in err and "newest step" in err
    assert steps_on_disk(ck) == ["checkpoint_100", "checkpoint_200"]


def test_two_folders_for_one_step_number_name_the_one_kept(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "run", [100, 200], layers=("layer_0",))
    write_checkpoint(ck / "checkpoint-200" / "model.safetensors", 200)
    code, out, _ = cli("prune", str(root), "--keep", "1", "--dry-run", db=db)
    assert code == 0
    kept = [line for line in out.splitlines() if line.startswith("keep")]
    assert any("run/checkpoints/checkpoint_200" in line for line in kept)
    assert any("run/checkpoints/checkpoint-200" in line for line in kept)


# 8. Finish the original note's job ---------------------------------------------------


def test_the_notes_248_empty_folders_are_collapsed_and_never_kept(tmp_path: Path, db: str) -> None:
    root = tmp_path / "root"
    ck = make_training(root, "train_36766f85", [498000])
    for step in range(1000, 249000, 1000):  # 248 folders left by an older cleaner
        d = ck / f"checkpoint_{step}"
        (d / "layer_7").mkdir(parents=True) if step % 3 else d.mkdir()
    code, out, _ = cli("ls", str(root), db=db)
    assert out.count("empty") >= 248
    plan = dry(root, db, "--keep", "1")
    assert [k["step"] for k in plan["keep"]] == [498000]
    assert len(plan["delete"]) == 248 and all(d["empty"] for d in plan["delete"])
    code, _, err = cli("prune", str(root), "--keep", "1", "--yes", db=db)
    assert code == 0, err
    assert steps_on_disk(ck) == ["checkpoint_498000"]


def test_rm_of_a_training_folder_removes_it_bottom_up_never_the_root(
    tmp_path: Path, db: str
) -> None:
    root = tmp_path / "root"
    keep = make_training(root, "other", [1], layers=("layer_0",))
    make_training(root, "done", [1, 2, 3], layers=("layer_0",))
    code, _, err = cli("rm", str(root), str(root / "done"), "--yes", db=db)
    assert code == 0 and (root / "done" / "checkpoints" / "checkpoint_3").is_dir(), err
    code, _, err = cli("rm", str(root), str(root / "done"), "--force", "--yes", db=db)
    assert code == 0, err
    assert not (root / "done").exists() and root.is_dir() and keep.is_dir()
    # a log keeps its folder and the training folder; checkpoints/ still goes
    ck = make_training(root, "logged", [1, 2], layers=("layer_0",))
    (root / "logged" / "logs").mkdir()
    (root / "logged" / "logs" / "run.log").write_text("step 2 done\n")
    assert cli("scan", str(root), db=db)[0] == 0
    code, _, err = cli("rm", str(root), str(root / "logged"), "--force", "--yes", db=db)
    assert code == 0, err
    assert not ck.exists() and (root / "logged" / "logs" / "run.log").is_file()
    # a training that is the root itself: its steps go, the root stays
    solo = tmp_path / "solo"
    make_training(tmp_path, "solo", [1, 2], layers=("layer_0",), checkpoints_dir=False)
    code, _, err = cli("rm", str(solo), str(solo), "--force", "--yes", db=db)
    assert solo.is_dir() and not list(solo.iterdir()), err


# Property: no rule set ever plans the newest valid step --------------------------------

_steps = st.lists(
    st.tuples(
        st.integers(0, 5_000),  # step number (duplicates allowed: two folders, one number)
        st.booleans(),  # valid
        st.booleans(),  # pinned
        st.integers(0, 10**18),  # mtime_ns
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False)),  # metric
    ),
    max_size=30,
)
_rules = st.builds(
    Rules,
    keep=st.integers(1, 5),
    every=st.one_of(st.none(), st.integers(1, 2_000)),
    best=st.one_of(
        st.none(),
        st.builds(Best, st.just("loss"), st.sampled_from(["min", "max"]), st.integers(1, 3)),
    ),
    newer_than_s=st.one_of(st.none(), st.floats(0, 1e9)),
)


@given(steps=_steps, rules=_rules, now=st.integers(0, 10**18))
def test_no_rule_set_plans_the_newest_valid_step(steps, rules, now) -> None:  # type: ignore[no-untyped-def]
    facts = [
        StepFacts(i, n, pinned, mtime, {} if m is None else {"loss": m}, valid=valid)
        for i, (n, valid, pinned, mtime, m) in enumerate(steps)
    ]
    decision = decide(facts, rules, now)
    newest = max((f.step for f in facts if f.valid), default=None)
    deleted = {f.id: f for f in facts if f.id in decision.delete}
    for f in deleted.values():
        assert not f.pinned
        assert f.valid or (newest is not None and f.step < newest), "may be in progress"
        assert not (f.valid and f.step == newest), "the newest valid step was planned"
    assert set(decision.delete) | set(decision.keep) == {f.id for f in facts}
    assert not set(decision.delete) & set(decision.keep)

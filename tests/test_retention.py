"""Retention rules: newest N, every K, best by a metadata key, newer than; union with reasons."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ckpt_tui.cli import main
from ckpt_tui.retention import Best, Rules, StepFacts, decide, every_k, parse_best, parse_duration
from tests.conftest import write_checkpoint

NOW = 2_000_000_000 * 10**9


def facts(steps: list[int], **metrics: float) -> list[StepFacts]:
    return [
        StepFacts(
            id=s,
            step=s,
            pinned=False,
            mtime_ns=NOW - (10_000 - s) * 10**9,
            metrics={"avg_loss": metrics[f"s{s}"]} if f"s{s}" in metrics else {},
        )
        for s in steps
    ]


def test_every_k_picks_the_closest_step_to_each_multiple_with_irregular_steps() -> None:
    steps = facts([90, 210, 290, 330, 350, 620])
    # 100->90, 200->210, 300->290, 400->350, 500->620 (120 away, 350 is 150), 600->620
    assert every_k(steps, 100) == {90, 210, 290, 350, 620}
    d = decide(steps, Rules(keep=1, every=100))
    assert d.keep[350] == ("every 100",)
    assert d.keep[620] == ("newest", "every 100")
    assert d.delete == (330,)


def test_best_by_metadata_keeps_unknown_steps_and_shows_every_reason() -> None:
    steps = facts([100, 200, 300, 400], s100=0.9, s200=0.1, s400=0.5)
    d = decide(steps, Rules(keep=1, best=Best("avg_loss", "min", 1)))
    assert d.keep == {
        400: ("newest",),
        200: ("best avg_loss",),
        300: ("no avg_loss: kept, not guessed",),
    }
    assert d.delete == (100,)
    d_max = decide(steps, Rules(keep=1, best=Best("avg_loss", "max", 2)))
    assert d_max.keep[100] == ("best avg_loss",) and d_max.keep[400] == ("newest", "best avg_loss")


def test_newer_than_keeps_recent_steps() -> None:
    steps = facts([9000, 9990, 9999])  # written 1000 s, 10 s and 1 s ago
    d = decide(steps, Rules(keep=1, newer_than_s=60, newer_than_label="1m"), now_ns=NOW)
    assert d.keep == {9999: ("newest", "newer than 1m"), 9990: ("newer than 1m",)}
    assert d.delete == (9000,)


def test_parsers_reject_nonsense() -> None:
    assert parse_duration("24h") == 86400 and parse_duration("90s") == 90
    assert parse_best("acc:max", 3) == Best("acc", "max", 3)
    for bad in ("", "soon", "-1h", "5y"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_best("loss:median")
    with pytest.raises(ValueError):
        Rules(keep=0)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.integers(0, 10**6), min_size=1, max_size=40, unique=True),
    pinned=st.sets(st.integers(0, 39)),
    keep=st.integers(1, 5),
    every=st.one_of(st.none(), st.integers(1, 10**5)),
)
def test_rules_never_plan_newest_or_pinned_and_partition_the_steps(
    steps: list[int], pinned: set[int], keep: int, every: int | None
) -> None:
    fs = [StepFacts(i, s, i in pinned, 0) for i, s in enumerate(steps)]
    d = decide(fs, Rules(keep=keep, every=every))
    newest = max(fs, key=lambda f: f.step)
    assert newest.id not in d.delete
    assert not any(f.pinned and f.id in d.delete for f in fs)
    assert set(d.keep) | set(d.delete) == {f.id for f in fs}
    assert not set(d.keep) & set(d.delete)
    assert len(d.keep) >= min(keep, len(fs))


def test_cli_prune_combines_rules_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = time.time() - 7 * 86400
    for i, step in enumerate([1000, 2000, 3000, 4000, 5000, 6000]):
        p = root / "t" / "checkpoints" / f"checkpoint_{step}" / "layer_0" / "checkpoint.safetensors"
        write_checkpoint(p, step)
        loss_file = p  # rewrite metadata with a chosen loss: step 2000 is best
        from safetensors.numpy import load_file, save_file

        save_file(
            load_file(str(loss_file)),
            str(loss_file),
            metadata={"avg_loss": str(0.1 if step == 2000 else 1.0 + i)},
        )
        os.utime(p, (old, old) if step != 5000 else (time.time() - 3600, time.time() - 3600))
    db = str(tmp_path / "db.sqlite3")
    result = CliRunner().invoke(
        main,
        [
            "prune",
            str(root),
            "--keep",
            "1",
            "--every",
            "3000",
            "--best",
            "avg_loss:min",
            "--newer-than",
            "1d",
            "--dry-run",
            "--json",
            "--db",
            db,
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    reasons = {k["step"]: k["reasons"] for k in doc["keep"]}
    assert reasons == {
        2000: ["best avg_loss"],
        3000: ["every 3000"],
        5000: ["newer than 1d"],
        6000: ["newest", "every 3000"],
    }
    assert [d["step"] for d in doc["delete"]] == [1000, 4000]
    bad = CliRunner().invoke(
        main, ["prune", str(root), "--keep", "1", "--newer-than", "soon", "--db", db]
    )
    assert bad.exit_code == 1 and "not a duration" in bad.stderr


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.integers(0, 5000), min_size=1, max_size=30, unique=True),
    k=st.integers(1, 700),
)
def test_every_k_matches_the_definition(steps: list[int], k: int) -> None:
    """Differential: the linear algorithm equals 'closest step to each multiple, ties older'."""
    fs = [StepFacts(s, s, False, 0) for s in steps]
    expected = set()
    for m in range(k, max(steps) + 1, k):
        expected.add(min(steps, key=lambda s: (abs(s - m), s)))
    assert every_k(fs, k) == expected

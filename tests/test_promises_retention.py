"""Retention rules, exactly: the reasons a user sees, the boundaries of each rule, and the
validity rules ("keep rules and the newest protection count valid steps only"). Each test
here kills mutants of ``ckpt_tui/retention.py`` that survived the rest of the suite
(mutation/report.md).
"""

from __future__ import annotations

import pytest

from ckpt_tui.retention import (
    IN_PROGRESS,
    NO_VALID,
    Best,
    Rules,
    StepFacts,
    decide,
    parse_best,
)

NOW = 2_000_000_000 * 10**9


def _facts(
    steps: list[int],
    *,
    invalid: set[int] = frozenset(),
    pinned: set[int] = frozenset(),
    loss: dict[int, float] | None = None,
    mtime: dict[int, int] | None = None,
) -> list[StepFacts]:
    loss = loss or {}
    mtime = mtime or {}
    return [
        StepFacts(
            id=s,
            step=s,
            pinned=s in pinned,
            mtime_ns=mtime.get(s, 0),
            metrics={"avg_loss": loss[s]} if s in loss else {},
            valid=s not in invalid,
        )
        for s in steps
    ]


def test_reasons_are_exact() -> None:
    d = decide(_facts([100, 200, 300, 400], pinned={100}), Rules(keep=2))
    assert d.keep == {400: ("newest",), 300: ("keep newest 2",), 100: ("pinned",)}
    assert d.delete == (200,)


def test_incomplete_steps_newer_than_the_newest_valid_one_are_kept_as_in_progress() -> None:
    # 400 and 500 are broken or cut short; 300 is the newest valid step.
    d = decide(_facts([100, 200, 300, 400, 500], invalid={150, 400, 500}), Rules(keep=2))
    assert d.keep == {
        300: ("newest",),
        200: ("keep newest 2",),
        400: (IN_PROGRESS,),
        500: (IN_PROGRESS,),
    }
    assert d.delete == (100,)


def test_an_incomplete_step_older_than_the_newest_valid_one_is_planned() -> None:
    d = decide(_facts([100, 200, 300], invalid={200}), Rules(keep=1))
    assert d.keep == {300: ("newest",)}
    assert d.delete == (100, 200)


def test_a_training_without_a_valid_step_keeps_everything() -> None:
    d = decide(_facts([100, 200], invalid={100, 200}), Rules(keep=1))
    assert d.keep == {100: (NO_VALID,), 200: (NO_VALID,)}
    assert d.delete == ()


def test_newer_than_boundary_is_inclusive_to_the_nanosecond() -> None:
    ten_s = 10 * 10**9
    facts = _facts([1, 2, 3], mtime={1: NOW - ten_s - 1, 2: NOW - ten_s, 3: NOW})
    d = decide(facts, Rules(keep=1, newer_than_s=10, newer_than_label="10s"), now_ns=NOW)
    assert d.keep == {3: ("newest", "newer than 10s"), 2: ("newer than 10s",)}
    assert d.delete == (1,)
    unlabelled = decide(facts, Rules(keep=1, newer_than_s=10), now_ns=NOW)
    assert unlabelled.keep[2] == ("newer than 10s",)


def test_best_ties_go_to_the_newer_step() -> None:
    facts = _facts([100, 200, 300, 400], loss={100: 0.5, 200: 0.5, 300: 0.9})
    d = decide(facts, Rules(keep=1, best=Best("avg_loss", "min", 1)))
    assert d.keep == {400: ("newest", "no avg_loss: kept, not guessed"), 200: ("best avg_loss",)}
    assert d.delete == (100, 300)
    d_max = decide(
        _facts([100, 200, 300], loss={100: 2.0, 200: 2.0, 300: 1.0}),
        Rules(keep=1, best=Best("avg_loss", "max", 1)),
    )
    assert d_max.keep == {300: ("newest",), 200: ("best avg_loss",)}


def test_parse_best_defaults_and_refusals() -> None:
    assert parse_best("avg_loss") == Best("avg_loss", "min", 1)
    assert parse_best("acc:max", 2) == Best("acc", "max", 2)
    for bad in ("loss:median", ":max", "a:b:max"):
        with pytest.raises(ValueError) as err:
            parse_best(bad)
        assert str(err.value) == f"not a rule: {bad!r} (use KEY, KEY:min or KEY:max)"
    assert parse_best("loss:") == Best("loss", "min", 1)  # an empty mode is the default


def test_rules_refuse_nonsense_with_their_messages() -> None:
    cases = [
        (dict(keep=0), "keep must be at least 1: the newest step is never pruned"),
        (dict(every=0), "every must be a positive number of steps"),
        (dict(best=Best("k", "min", 0)), "best needs a count >= 1 and a mode of min or max"),
        (dict(best=Best("k", "median", 1)), "best needs a count >= 1 and a mode of min or max"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as err:
            Rules(**kwargs)  # type: ignore[arg-type]
        assert str(err.value) == message


def test_a_broken_step_tied_with_the_newest_valid_number_is_kept_as_in_progress() -> None:
    facts = [
        StepFacts(id=1, step=100, pinned=False, mtime_ns=0),
        StepFacts(id=2, step=300, pinned=False, mtime_ns=0),
        StepFacts(id=3, step=300, pinned=False, mtime_ns=0, valid=False),
    ]  # checkpoint-300
    d = decide(facts, Rules(keep=1))
    assert d.keep == {2: ("newest",), 3: (IN_PROGRESS,)}
    assert d.delete == (1,)

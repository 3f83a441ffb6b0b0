"""Retention rules: which steps of a training to keep, each with every reason it is kept (pure).

Rules combine as a union: a step is kept if any rule keeps it, and it shows every reason.
The rules count *valid* steps only (complete, every checkpoint file valid): the newest valid
step, pinned steps, and incomplete steps newer than the newest valid one (a save that may
be in progress) are always kept; an empty or broken step older than it is planned like any
other.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

IN_PROGRESS = "newer than the newest valid step: may be in progress"
NO_VALID = "no valid step in this training yet: may be in progress"
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class StepFacts:
    """What a rule may look at about one step."""

    id: int
    step: int
    pinned: bool
    mtime_ns: int
    metrics: dict[str, float | None] = field(default_factory=dict)  # None: present, not numeric
    valid: bool = True  # complete and every checkpoint file valid (stepfacts.assess)


@dataclass(frozen=True, slots=True)
class Best:
    key: str
    mode: str = "min"  # "min" or "max"
    count: int = 1


@dataclass(frozen=True, slots=True)
class Rules:
    keep: int = 1  # newest N, N >= 1
    every: int | None = None  # keep one step per multiple of K
    best: Best | None = None
    newer_than_s: float | None = None
    newer_than_label: str = ""

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError("keep must be at least 1: the newest step is never pruned")
        if self.every is not None and self.every < 1:
            raise ValueError("every must be a positive number of steps")
        if self.best is not None and (self.best.count < 1 or self.best.mode not in ("min", "max")):
            raise ValueError("best needs a count >= 1 and a mode of min or max")


@dataclass(frozen=True, slots=True)
class Decision:
    keep: dict[int, tuple[str, ...]]  # step id -> reasons, in rule order
    delete: tuple[int, ...]  # step ids, oldest first


def parse_duration(text: str) -> float:
    """'90s', '15m', '24h', '7d', '2w' -> seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_best(text: str, count: int = 1) -> Best:
    """'avg_loss', 'avg_loss:min' or 'accuracy:max'."""
    key, _, mode = text.partition(":")
    if not key or mode not in ("", "min", "max"):
        raise ValueError(f"not a rule: {text!r} (use KEY, KEY:min or KEY:max)")
    return Best(key, mode or "min", count)


def every_k(steps: list[StepFacts], k: int) -> set[int]:
    """For each positive multiple of K up to the newest step, the step closest to it.

    Linear in the number of steps (not in newest / K): between two neighbouring steps a < b,
    multiples up to their midpoint go to a (ties to the older step), the rest to b.
    """
    ordered = sorted(steps, key=lambda s: s.step)
    if not ordered:
        return set()

    def has_multiple(lo: float, hi: float) -> bool:
        first = max(k, math.ceil(lo / k) * k)
        return first <= hi

    chosen: set[int] = set()
    if has_multiple(k, ordered[0].step):
        chosen.add(ordered[0].id)
    for a, b in itertools.pairwise(ordered):
        mid = (a.step + b.step) / 2
        if has_multiple(a.step, mid):
            chosen.add(a.id)
        if has_multiple(math.floor(mid) + 1, b.step):
            chosen.add(b.id)
    return chosen


def best_n(steps: list[StepFacts], best: Best) -> tuple[set[int], set[int]]:
    """(best ids, ids kept because their files lack a numeric value for the key)."""
    scored = [(s.metrics.get(best.key), s) for s in steps]
    unknown = {s.id for v, s in scored if v is None or math.isnan(v)}
    known = [(v, s) for v, s in scored if v is not None and not math.isnan(v)]
    known.sort(key=lambda vs: (vs[0] if best.mode == "min" else -vs[0], -vs[1].step))
    return {s.id for _, s in known[: best.count]}, unknown


def decide(steps: Iterable[StepFacts], rules: Rules, now_ns: int = 0) -> Decision:
    """Apply every rule to one training's steps."""
    ordered = sorted(steps, key=lambda s: s.step)
    reasons: dict[int, list[str]] = {}

    def add(sid: int, why: str) -> None:
        reasons.setdefault(sid, []).append(why)

    valid = [s for s in ordered if s.valid]
    newest = valid[-1].step if valid else None
    for i, s in enumerate(reversed(valid)):
        if s.step == newest:  # two directories can carry the newest number: keep both
            add(s.id, "newest")
        elif i < rules.keep:
            add(s.id, f"keep newest {rules.keep}")
    for s in ordered:
        if not s.valid and (newest is None or s.step >= newest):  # a tie may be a save
            add(s.id, NO_VALID if newest is None else IN_PROGRESS)
    for s in ordered:
        if s.pinned:
            add(s.id, "pinned")
    if rules.every:
        kept = every_k(valid, rules.every)
        for s in valid:
            if s.id in kept:
                add(s.id, f"every {rules.every}")
    if rules.best is not None:
        top, unknown = best_n(valid, rules.best)
        for s in valid:
            if s.id in top:
                add(s.id, f"best {rules.best.key}")
            elif s.id in unknown:
                add(s.id, f"no {rules.best.key}: kept, not guessed")
    if rules.newer_than_s is not None:
        cutoff = now_ns - int(rules.newer_than_s * 1e9)
        label = rules.newer_than_label or f"{rules.newer_than_s:g}s"
        for s in ordered:
            if s.mtime_ns >= cutoff:
                add(s.id, f"newer than {label}")
    keep = {sid: tuple(r) for sid, r in reasons.items()}
    return Decision(keep=keep, delete=tuple(s.id for s in ordered if s.id not in keep))


def keep_newest(steps: Iterable[StepFacts], n: int) -> Decision:
    """Keep the newest ``n`` steps (n >= 1) by step number, plus every pinned step."""
    return decide(steps, Rules(keep=n))

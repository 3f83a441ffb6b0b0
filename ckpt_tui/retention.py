"""Retention rules: which steps of a training to keep, each with every reason it is kept (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepFacts:
    """What a rule may look at: the step number, pin state and newest file mtime."""

    id: int
    step: int
    pinned: bool
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Decision:
    keep: dict[int, tuple[str, ...]]  # step id -> reasons, in rule order
    delete: tuple[int, ...]  # step ids, oldest first


def keep_newest(steps: Iterable[StepFacts], n: int) -> Decision:
    """Keep the newest ``n`` steps (n >= 1) by step number, plus every pinned step."""
    if n < 1:
        raise ValueError("keep must be at least 1: the newest step is never pruned")
    ordered = sorted(steps, key=lambda s: s.step)
    reasons: dict[int, list[str]] = {}
    for i, s in enumerate(reversed(ordered)):
        if i == 0:
            reasons.setdefault(s.id, []).append("newest")
        elif i < n:
            reasons.setdefault(s.id, []).append(f"keep newest {n}")
        if s.pinned:
            reasons.setdefault(s.id, []).append("pinned")
    keep = {sid: tuple(r) for sid, r in reasons.items()}
    return Decision(keep=keep, delete=tuple(s.id for s in ordered if s.id not in keep))

"""A plan in words, per step: what goes, what stays and why, what it frees.

One line per step (never per file): a whole step reads ``train/checkpoint_2000/  3 files``; a
partial one names its files in natural order (``layer_2, layer_10``). Protected steps are
listed once each with their reason.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rich.cells import cell_len
from textual.content import Content

from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.model import natural_key
from ckpt_tui.types import Plan, PlannedStep, Protected

MAX_STEPS = 400  # lines of steps in the (scrolling) body; the rest is counted
MAX_FOREIGN = 8
MAX_PROTECTED = 200
COMMON_FILE = "/checkpoint.safetensors"
FORCE_HINT = "; --force to include"


@dataclass(frozen=True, slots=True)
class Kept:
    """One protected step (or file) and why, grouped from the plan's per-file entries."""

    where: str
    reasons: tuple[str, ...]
    files: int
    forcable: bool  # "include protected steps" lifts it
    open_file: bool  # asks again instead


def reason(text: str) -> str:
    return text.removesuffix(FORCE_HINT)


def group_protected(
    plan: Plan, rel: Callable[[str], str], steps: Mapping[int, str] | None = None
) -> list[Kept]:
    """Protected entries, one per step (named by its folder when ``steps`` knows it): a
    step's files share its reasons."""
    by_key: dict[object, list[Protected]] = {}
    for p in plan.protected:
        key: object = ("step", p.step_id) if p.step_id is not None else ("path", p.path)
        by_key.setdefault(key, []).append(p)
    out = []
    for items in by_key.values():
        paths = [p.path for p in items]
        sid = items[0].step_id
        if steps is not None and sid is not None and sid in steps:
            where = rel(steps[sid]).rstrip("/") + "/"
        else:
            where = rel(paths[0] if len(paths) == 1 else os.path.commonpath(paths))
        out.append(
            Kept(
                where=where,
                reasons=tuple(dict.fromkeys(reason(p.reason) for p in items)),
                files=sum(1 for p in items if p.file_id is not None),
                forcable=any(p.forcable for p in items),
                open_file=any(p.needs_confirmation for p in items),
            )
        )
    return out


def forcable(plan: Plan) -> list[Kept]:
    return [k for k in group_protected(plan, str) if k.forcable]


def only_foreign_stays(s: PlannedStep, foreign: int) -> bool:
    """Every file of the step the layout names is planned: only its foreign files stay."""
    return not s.whole and foreign > 0 and s.indexed_files - len(s.files) == foreign


def step_line(
    s: PlannedStep, units: fmt.Units, rel: Callable[[str], str], where_w: int, foreign: int = 0
) -> Content:
    where = rel(s.path).rstrip("/") + "/"
    size = units.size(units.pick(s.size_bytes, s.disk_bytes))
    if s.whole:
        what = fmt.count(len(s.files), "file")
    elif only_foreign_stays(s, foreign):
        what = fmt.count(len(s.files), "file") + " (the step stays for its foreign files)"
    else:
        names = sorted(
            ("/".join(f.relparts[len(s.relparts) :]).removesuffix(COMMON_FILE) for f in s.files),
            key=natural_key,
        )
        what = ", ".join(names) + " (the step stays)"
    return Content.assemble(
        "  ", (fmt.pad(where, where_w), "bold"), f" {size:>10}  ", (what, "$text-muted")
    )


def hidden_line(hidden: tuple[str, ...]) -> Content:
    n = len(hidden)
    shown = ", ".join(hidden[:3]) + (f" and {n - 3} more" if n > 3 else "")
    verb = "is" if n == 1 else "are"
    return Content.styled(
        f"{fmt.count(n, 'marked step')} {verb} hidden by the filter: {shown}", "bold $warning"
    )


def describe(
    plan: Plan,
    units: fmt.Units,
    rel: Callable[[str], str],
    free: int | None,
    hidden: tuple[str, ...] = (),
    steps: Mapping[int, str] | None = None,
) -> Content:
    lines: list[Content] = []
    foreign = Counter(f.step_id for f in plan.foreign)  # per step: foreign files that stay
    if not plan.empty:
        frees = [("frees ", ""), (units.size(plan.disk_bytes), "bold $success"), (" on disk", "")]
        if plan.bytes != plan.disk_bytes:
            frees.append((f" ({units.size(plan.bytes)} apparent)", "$text-muted"))
        lines.append(Content.assemble(*frees))
        if free is not None:
            lines.append(
                Content.assemble(
                    "free space ",
                    (units.size(free), "bold"),
                    " → ",
                    (units.size(free + plan.disk_bytes), "bold $success"),
                )
            )
        partial = sum(
            1 for s in plan.steps if not s.whole and not only_foreign_stays(s, foreign[s.step_id])
        )
        if partial:
            lines.append(
                Content.styled(
                    f"{fmt.count(partial, 'step')} will be left partial (some of its checkpoint "
                    "files stay)",
                    "$warning",
                )
            )
    if hidden:
        lines.append(hidden_line(hidden))
    kept = group_protected(plan, rel, steps)
    if kept:
        lines += [Content(""), Content.styled(f"Kept: protected ({len(kept):,})", "bold $warning")]
        for k in kept[:MAX_PROTECTED]:
            files = f" ({fmt.count(k.files, 'file')})" if k.files else ""
            lines.append(
                Content.assemble(
                    "  ", (k.where + files, ""), "  ", ("; ".join(k.reasons), "$warning")
                )
            )
        if len(kept) > MAX_PROTECTED:
            lines.append(Content.styled(f"  … and {len(kept) - MAX_PROTECTED} more", "$text-muted"))
        if any(k.forcable for k in kept):
            lines.append(
                Content.styled("  tick “include protected steps” to delete them", "$text-muted")
            )
        if any(k.open_file for k in kept):
            lines.append(Content.styled("  open files: y asks about them once more", "$text-muted"))
    if plan.foreign:
        total = sum(f.size_bytes for f in plan.foreign)
        lines += [
            Content(""),
            Content.styled(
                f"Kept: {fmt.count(len(plan.foreign), 'foreign file')} ({units.size(total)}), "
                "not named by their layout; their folders stay",
                "bold",
            ),
        ]
        for f in plan.foreign[:MAX_FOREIGN]:
            lines.append(
                Content.assemble("  ", rel(f.path), "  ", (units.size(f.size_bytes), "$text-muted"))
            )
        if len(plan.foreign) > MAX_FOREIGN:
            lines.append(
                Content.styled(f"  … and {len(plan.foreign) - MAX_FOREIGN:,} more", "$text-muted")
            )
    if plan.steps:
        lines += [Content(""), Content.styled(f"Steps ({len(plan.steps):,})", "bold")]
        shown = plan.steps[:MAX_STEPS]
        where_w = max(cell_len(rel(s.path).rstrip("/") + "/") for s in shown)
        lines += [step_line(s, units, rel, where_w, foreign[s.step_id]) for s in shown]
        if len(plan.steps) > MAX_STEPS:
            lines.append(
                Content.styled(f"  … and {len(plan.steps) - MAX_STEPS:,} more", "$text-muted")
            )
    if plan.empty and not kept and not plan.foreign:
        lines.append(Content("None of the marked files is in the index any more: r re-scans."))
    while lines and not lines[0].plain:  # nothing to free: the first section starts at the top
        lines.pop(0)
    return Content("\n").join(lines)

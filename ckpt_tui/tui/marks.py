"""Marks: a set of file ids with running totals, and the rules for marking groups of them.

Textual-free and tested on its own. Marks survive sort, filter, collapse and rescan because
they are ids, not labels. Listeners hear about every change (``watch``), so the views never
need to be told by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ckpt_tui.tui.model import Kind, MarkState, Node
from ckpt_tui.types import FileBrief

MarksListener = Callable[["frozenset[int] | None"], None]  # the step ids touched, or None: many


@dataclass(frozen=True, slots=True)
class GroupToggle:
    """What Space on a training (or the root) did."""

    marked: int  # files newly marked
    unmarked: int  # files unmarked
    skipped_steps: tuple[int, ...]  # guarded steps left alone (pinned, protected)


@dataclass
class Marks:
    """Marked file ids with running totals, so a mark costs the files it touches, not the tree."""

    files: dict[int, FileBrief] = field(default_factory=dict)
    by_step: dict[int, set[int]] = field(default_factory=dict)
    by_training: dict[int, set[int]] = field(default_factory=dict)
    marked: set[int] = field(default_factory=set)
    marked_bytes: int = 0
    marked_disk: int = 0
    step_marked: Counter[int] = field(default_factory=Counter)
    training_marked: Counter[int] = field(default_factory=Counter)
    pinned_steps: set[int] = field(default_factory=set)
    # steps that marking a whole training skips, with why (pinned, newest valid step, ...)
    guarded: dict[int, str] = field(default_factory=dict)
    _listeners: list[MarksListener] = field(default_factory=list, repr=False)

    # listeners --------------------------------------------------------------------------

    def watch(self, listener: MarksListener) -> None:
        self._listeners.append(listener)

    def _changed(self, steps: Iterable[int] | None) -> None:
        touched = frozenset(steps) if steps is not None else None
        for listener in self._listeners:
            listener(touched)

    # the file map -----------------------------------------------------------------------

    def load(self, briefs: Iterable[FileBrief]) -> None:
        """Replace the file map (after a scan); keep the marks of files that still exist."""
        old = self.marked
        self.files = {b.id: b for b in briefs}
        self.by_step, self.by_training = {}, {}
        self.pinned_steps = set()
        for b in self.files.values():
            self.by_step.setdefault(b.step_id, set()).add(b.id)
            self.by_training.setdefault(b.training_id, set()).add(b.id)
            if b.pinned:
                self.pinned_steps.add(b.step_id)
        for sid in self.pinned_steps:
            self.guarded.setdefault(sid, "pinned")
        self.marked, self.marked_bytes, self.marked_disk = set(), 0, 0
        self.step_marked, self.training_marked = Counter(), Counter()
        self._mark(old & self.files.keys())
        self._changed(None)

    def guard(self, step_id: int, reason: str | None) -> None:
        """Record why marking a training skips this step (None: it does not)."""
        if reason:
            self.guarded[step_id] = reason
        else:
            self.guarded.pop(step_id, None)

    def set_pinned(self, step_id: int, pinned: bool, other_reason: str | None = None) -> None:
        """A pinned step is never marked: pinning drops its marks."""
        if pinned:
            self.pinned_steps.add(step_id)
            self.guarded[step_id] = "pinned"
            self._unmark(self.by_step.get(step_id, ()))
        else:
            self.pinned_steps.discard(step_id)
            self.guard(step_id, other_reason)
        self._changed((step_id,))

    # changes ----------------------------------------------------------------------------

    def _mark(self, ids: Iterable[int]) -> set[int]:
        steps: set[int] = set()
        for fid in ids:
            b = self.files.get(fid)
            if b is None or fid in self.marked:
                continue
            self.marked.add(fid)
            self.marked_bytes += b.size_bytes
            self.marked_disk += disk_of(b)
            self.step_marked[b.step_id] += 1
            self.training_marked[b.training_id] += 1
            steps.add(b.step_id)
        return steps

    def _unmark(self, ids: Iterable[int]) -> set[int]:
        steps: set[int] = set()
        for fid in ids:
            if fid not in self.marked:
                continue
            b = self.files[fid]
            self.marked.discard(fid)
            self.marked_bytes -= b.size_bytes
            self.marked_disk -= disk_of(b)
            self.step_marked[b.step_id] -= 1
            self.training_marked[b.training_id] -= 1
            steps.add(b.step_id)
        return steps

    def mark(self, ids: Iterable[int]) -> int:
        """Mark files (already marked or unknown ids are ignored); returns how many."""
        before = len(self.marked)
        self._changed(self._mark(ids))
        return len(self.marked) - before

    def unmark(self, ids: Iterable[int]) -> None:
        self._changed(self._unmark(ids))

    def clear(self) -> int:
        n = len(self.marked)
        self.marked, self.marked_bytes, self.marked_disk = set(), 0, 0
        self.step_marked, self.training_marked = Counter(), Counter()
        self._changed(None)
        return n

    def toggle(self, node: Node) -> bool:
        """Space on a step or a file: mark it whole, or unmark it if it was all marked."""
        ids = self.ids_of(node)
        if ids and ids <= self.marked:
            self._changed(self._unmark(ids))
            return False
        self._changed(self._mark(ids))
        return True

    def toggle_group(self, node: Node) -> GroupToggle:
        """Space on a training or the root: every file under it except guarded steps'.

        When every markable file is marked already, the group is unmarked instead (guarded
        steps included, so nothing marked by hand lingers)."""
        ids = self.ids_of(node)
        skipped = sorted({self.files[i].step_id for i in ids} & self.guarded.keys())
        markable = ids - {f for sid in skipped for f in self.by_step.get(sid, ())}
        if markable and markable <= self.marked:
            before = len(self.marked)
            self._changed(self._unmark(ids))
            return GroupToggle(0, before - len(self.marked), ())
        before = len(self.marked)
        self._changed(self._mark(markable))
        return GroupToggle(len(self.marked) - before, 0, tuple(skipped))

    def invert(self, ids: set[int]) -> None:
        """Marked become unmarked and the rest marked, guarded steps left out."""
        ids = {i for i in ids if self.files[i].step_id not in self.guarded}
        on = ids & self.marked
        steps = self._unmark(on) | self._mark(ids - on)
        self._changed(steps)

    def forget(self, fid: int) -> FileBrief | None:
        """Drop a deleted file from the map (and from the marks); listeners are not told
        (a deletion applies many at once and says so through ``settled``)."""
        self._unmark((fid,))
        b = self.files.pop(fid, None)
        if b is not None:
            self.by_step.get(b.step_id, set()).discard(fid)
            self.by_training.get(b.training_id, set()).discard(fid)
        return b

    def settled(self, steps: Iterable[int] | None = None) -> None:
        """Tell the listeners after a batch of ``forget`` calls."""
        self._changed(steps)

    # queries ----------------------------------------------------------------------------

    def ids_of(self, node: Node) -> set[int]:
        if node.kind == Kind.ROOT:
            return set(self.files)
        if node.kind == Kind.TRAINING:
            return set(self.by_training.get(node.id, ()))
        if node.kind == Kind.STEP:
            return set(self.by_step.get(node.id, ()))
        return {node.id} if node.id in self.files else set()

    def state(self, node: Node) -> MarkState:
        if node.kind == Kind.FILE:
            return MarkState.ALL if node.id in self.marked else MarkState.NONE
        if node.kind == Kind.STEP:
            n, total = self.step_marked[node.id], len(self.by_step.get(node.id, ()))
        elif node.kind == Kind.TRAINING:
            n, total = self.training_marked[node.id], len(self.by_training.get(node.id, ()))
        else:
            n, total = len(self.marked), len(self.files)
        if n == 0:
            return MarkState.NONE
        return MarkState.ALL if n >= total else MarkState.PARTIAL

    def marked_step_ids(self) -> set[int]:
        return {sid for sid, n in self.step_marked.items() if n > 0}

    def marked_steps(self) -> int:
        return sum(1 for v in self.step_marked.values() if v > 0)


def disk_of(b: FileBrief) -> int:
    """Allocated bytes of a file in the map (apparent when the map does not know them)."""
    return b.disk_bytes if b.disk_bytes is not None else b.size_bytes

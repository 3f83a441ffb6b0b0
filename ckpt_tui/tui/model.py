"""The browser's state without Textual: nodes, marks (file ids), and the flat list of visible rows.

The tree widget renders ``TreeModel.rows`` line by line; structural changes (expand, collapse,
rows removed after a deletion) splice that list instead of re-walking everything.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ckpt_tui.types import FileBrief, FileInfo, RootInfo, StepInfo, TrainingInfo


class Kind(enum.IntEnum):
    ROOT = 0
    TRAINING = 1
    STEP = 2
    FILE = 3


class Sort(enum.Enum):
    """How steps are ordered inside a training; ``s`` cycles through them."""

    STEP = "step"
    SIZE = "size"
    AGE = "age"

    def next(self) -> Sort:
        members = list(Sort)
        return members[(members.index(self) + 1) % len(members)]


class MarkState(enum.IntEnum):
    NONE = 0
    PARTIAL = 1
    ALL = 2


Info = RootInfo | TrainingInfo | StepInfo | FileInfo


@dataclass(eq=False, slots=True)
class Node:
    """One row of the tree; sizes are copies so a deletion can update them in place."""

    kind: Kind
    id: int
    name: str
    info: Info
    parent: Node | None
    size: int = 0
    disk: int = 0
    files: int = 0
    mtime_ns: int = 0
    expanded: bool = False
    children: list[Node] | None = None  # None until loaded

    @property
    def depth(self) -> int:
        return int(self.kind)

    @property
    def key(self) -> tuple[Kind, int]:
        return (self.kind, self.id)

    @property
    def expandable(self) -> bool:
        return self.kind != Kind.FILE


def training_node(info: TrainingInfo, parent: Node) -> Node:
    return Node(
        Kind.TRAINING,
        info.id,
        info.name,
        info,
        parent,
        info.size_bytes,
        info.disk_bytes,
        info.file_count,
        info.newest_mtime_ns or 0,
    )


def step_node(info: StepInfo, parent: Node) -> Node:
    return Node(
        Kind.STEP,
        info.id,
        info.dirname,
        info,
        parent,
        info.size_bytes,
        info.disk_bytes,
        info.file_count,
        info.mtime_ns,
    )


def file_node(info: FileInfo, parent: Node) -> Node:
    return Node(
        Kind.FILE,
        info.id,
        info.relpath,
        info,
        parent,
        info.size_bytes,
        info.disk_bytes,
        1,
        info.mtime_ns,
    )


@dataclass
class Marks:
    """Marked file ids with running totals, so a mark costs the files it touches, not the tree."""

    files: dict[int, FileBrief] = field(default_factory=dict)
    by_step: dict[int, set[int]] = field(default_factory=dict)
    by_training: dict[int, set[int]] = field(default_factory=dict)
    marked: set[int] = field(default_factory=set)
    marked_bytes: int = 0
    step_marked: Counter[int] = field(default_factory=Counter)
    training_marked: Counter[int] = field(default_factory=Counter)
    pinned_steps: set[int] = field(default_factory=set)

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
        self.marked, self.marked_bytes = set(), 0
        self.step_marked, self.training_marked = Counter(), Counter()
        self.mark(old & self.files.keys())

    def mark(self, ids: Iterable[int]) -> int:
        n = 0
        for fid in ids:
            b = self.files.get(fid)
            if b is None or fid in self.marked:
                continue
            self.marked.add(fid)
            self.marked_bytes += b.size_bytes
            self.step_marked[b.step_id] += 1
            self.training_marked[b.training_id] += 1
            n += 1
        return n

    def unmark(self, ids: Iterable[int]) -> int:
        n = 0
        for fid in ids:
            if fid not in self.marked:
                continue
            b = self.files[fid]
            self.marked.discard(fid)
            self.marked_bytes -= b.size_bytes
            self.step_marked[b.step_id] -= 1
            self.training_marked[b.training_id] -= 1
            n += 1
        return n

    def clear(self) -> None:
        self.marked, self.marked_bytes = set(), 0
        self.step_marked, self.training_marked = Counter(), Counter()

    def forget(self, fid: int) -> FileBrief | None:
        """Drop a deleted file from the map (and from the marks)."""
        self.unmark((fid,))
        b = self.files.pop(fid, None)
        if b is not None:
            self.by_step.get(b.step_id, set()).discard(fid)
            self.by_training.get(b.training_id, set()).discard(fid)
        return b

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

    def marked_steps(self) -> int:
        return sum(1 for v in self.step_marked.values() if v > 0)


class TreeModel:
    """Nodes plus the flat list of visible rows (``rows``) the widget draws."""

    def __init__(self, root: RootInfo) -> None:
        self.root = Node(Kind.ROOT, root.id, root.path, root, None, expanded=True, children=[])
        self.rows: list[Node] = [self.root]
        self.sort = Sort.STEP
        self.filter = ""
        self.errors: dict[int, str] = {}  # file id -> why it could not be deleted
        self.training_nodes: dict[int, Node] = {}
        self.step_nodes: dict[int, Node] = {}

    # structure --------------------------------------------------------------------------

    @property
    def trainings(self) -> list[Node]:
        assert self.root.children is not None
        return self.root.children

    def set_trainings(self, infos: Iterable[TrainingInfo]) -> None:
        """Merge fresh training totals in, keeping loaded children and expansion."""
        old = {t.id: t for t in self.trainings}
        new: list[Node] = []
        for info in infos:
            node = old.get(info.id)
            if node is None:
                node = training_node(info, self.root)
            else:
                node.info, node.name = info, info.name
                node.size, node.disk, node.files = info.size_bytes, info.disk_bytes, info.file_count
                node.mtime_ns = info.newest_mtime_ns or 0
            new.append(node)
        self.root.children = new
        self.training_nodes = {t.id: t for t in new}
        self.update_root_totals()
        self.rebuild()

    def update_root_totals(self) -> None:
        self.root.size = sum(t.size for t in self.trainings)
        self.root.disk = sum(t.disk for t in self.trainings)
        self.root.files = sum(t.files for t in self.trainings)
        self.root.mtime_ns = max((t.mtime_ns for t in self.trainings), default=0)

    def set_steps(self, training: Node, infos: Iterable[StepInfo]) -> None:
        old = {s.id: s for s in training.children or ()}
        kids = []
        for info in infos:
            node = step_node(info, training)
            prev = old.get(info.id)
            if prev is not None:
                node.expanded, node.children = prev.expanded, prev.children
            kids.append(node)
            self.step_nodes[info.id] = node
        training.children = self._sorted(kids)

    def set_files(self, step: Node, infos: Iterable[FileInfo]) -> None:
        kids = []
        for info in infos:
            if info.id in self.errors and info.error is None:
                info = replace(info, error=self.errors[info.id])
            kids.append(file_node(info, step))
        step.children = kids

    def _sorted(self, steps: list[Node]) -> list[Node]:
        if self.sort == Sort.SIZE:
            return sorted(steps, key=lambda n: (-n.size, n.name))
        if self.sort == Sort.AGE:
            return sorted(steps, key=lambda n: (n.mtime_ns, n.name))
        return sorted(steps, key=lambda n: (_step_number(n), n.name))

    def cycle_sort(self) -> Sort:
        self.sort = self.sort.next()
        for t in self.trainings:
            if t.children is not None:
                t.children = self._sorted(t.children)
        self.rebuild()
        return self.sort

    # visible rows -----------------------------------------------------------------------

    def visible_children(self, node: Node) -> list[Node]:
        kids = node.children or []
        needle = self.filter.lower()
        if not needle or node.kind != Kind.TRAINING or needle in node.name.lower():
            return kids
        return [s for s in kids if needle in s.name.lower()]

    def _matches(self, training: Node) -> bool:
        needle = self.filter.lower()
        if not needle or needle in training.name.lower():
            return True
        return any(needle in s.name.lower() for s in training.children or ())

    def _emit(self, node: Node, out: list[Node]) -> None:
        out.append(node)
        if node.expanded:
            for child in self.visible_children(node):
                if child.kind == Kind.TRAINING and not self._matches(child):
                    continue
                self._emit(child, out)

    def rebuild(self) -> None:
        """Walk the expanded nodes once (O(visible rows)); used after sort, filter, reload."""
        out: list[Node] = []
        self._emit(self.root, out)
        self.rows = out

    def subtree_end(self, index: int) -> int:
        """Index just past the visible descendants of ``rows[index]``."""
        depth = self.rows[index].depth
        end = index + 1
        rows = self.rows
        while end < len(rows) and rows[end].depth > depth:
            end += 1
        return end

    def expand(self, index: int) -> None:
        node = self.rows[index]
        if node.expanded or not node.expandable:
            return
        node.expanded = True
        block: list[Node] = []
        for child in self.visible_children(node):
            self._emit(child, block)
        self.rows[index + 1 : index + 1] = block

    def collapse(self, index: int) -> None:
        node = self.rows[index]
        if not node.expanded or node.kind == Kind.ROOT:
            return
        del self.rows[index + 1 : self.subtree_end(index)]
        node.expanded = False

    def index_of(self, node: Node, hint: int = 0) -> int:
        """Row index of a visible node, searching outward from ``hint``; -1 if not shown."""
        rows = self.rows
        if 0 <= hint < len(rows) and rows[hint] is node:
            return hint
        try:
            return rows.index(node)
        except ValueError:
            return -1

    def find(self, key: tuple[Kind, int]) -> int:
        for i, n in enumerate(self.rows):
            if n.key == key:
                return i
        return -1

    # deletion ---------------------------------------------------------------------------

    def file_gone(self, brief: FileBrief) -> None:
        """Subtract a deleted file from its step, training and root totals."""
        self.errors.pop(brief.id, None)
        t = self.training_nodes.get(brief.training_id)
        if t is not None:
            t.size -= brief.size_bytes
            t.files -= 1
        s = self.step_nodes.get(brief.step_id)
        if s is not None:
            s.size -= brief.size_bytes
            s.files -= 1
            if s.children is not None:
                s.children = [f for f in s.children if f.id != brief.id]
        self.root.size -= brief.size_bytes
        self.root.files -= 1

    def remove_steps(self, step_ids: set[int], gone_files: set[int], touched: set[int]) -> None:
        """Drop removed step rows and deleted file rows in one O(rows) pass.

        ``touched`` are the training ids that lost files: one left with no files and no
        steps goes too (the index drops it as well).
        """
        emptied = []
        for t in self.trainings:
            if t.children is not None and step_ids:
                t.children = [s for s in t.children if s.id not in step_ids]
            if t.id in touched and t.files <= 0 and not t.children:
                emptied.append(t)
        if emptied:
            self.root.children = [t for t in self.trainings if t not in emptied]
            for t in emptied:
                self.training_nodes.pop(t.id, None)
        for sid in step_ids:
            self.step_nodes.pop(sid, None)
        dead = {id(t) for t in emptied}
        self.rows = [
            r
            for r in self.rows
            if not (
                (r.kind == Kind.STEP and r.id in step_ids)
                or (r.kind == Kind.FILE and r.id in gone_files)
                or id(r) in dead
                or (r.parent is not None and r.parent.kind == Kind.STEP and r.parent.id in step_ids)
            )
        ]

    def set_error(self, fid: int, error: str) -> None:
        self.errors[fid] = error

    def apply_error(self, step_id: int, fid: int, error: str) -> None:
        """Record a failed unlink and show it on the file row if loaded."""
        self.set_error(fid, error)
        step = self.step_nodes.get(step_id)
        for f in (step.children or ()) if step is not None else ():
            if f.id == fid and isinstance(f.info, FileInfo):
                f.info = replace(f.info, error=error)


def _step_number(node: Node) -> int:
    return node.info.step if isinstance(node.info, StepInfo) else 0

"""The browser's rows without Textual: nodes and the flat list of visible rows.

The tree widget renders ``TreeModel.rows`` line by line; structural changes (expand, collapse,
rows removed after a deletion) splice that list instead of re-walking everything. Every change
is announced to the listeners (``watch``): the view never has to be told by hand.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from rich.cells import cell_len

from ckpt_tui.types import FileInfo, RootInfo, StepInfo, TrainingInfo

ModelListener = Callable[[bool], None]  # True: the row list changed; False: only figures


class Kind(enum.IntEnum):
    ROOT = 0
    TRAINING = 1
    STEP = 2
    FILE = 3


class Sort(enum.Enum):
    """How rows are ordered; ``s`` cycles. Trainings follow too (by name for ``step``)."""

    STEP = "step"
    SIZE = "size"
    AGE = "age"

    def next(self) -> Sort:
        members = list(Sort)
        return members[(members.index(self) + 1) % len(members)]

    @property
    def words(self) -> str:
        return {
            Sort.STEP: "step number (trainings by name)",
            Sort.SIZE: "size, biggest first",
            Sort.AGE: "age, oldest first",
        }[self]


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
    name_w: int = 0  # cells the name takes (a CJK character takes two)

    def __post_init__(self) -> None:
        self.name_w = cell_len(self.name)

    def rename(self, name: str) -> None:
        self.name, self.name_w = name, cell_len(name)

    @property
    def depth(self) -> int:
        return int(self.kind)

    @property
    def key(self) -> tuple[Kind, int]:
        return (self.kind, self.id)

    @property
    def expandable(self) -> bool:
        return self.kind != Kind.FILE

    @property
    def number(self) -> int:
        """The step number (sort tie-breaks compare numbers, never text)."""
        return self.info.step if isinstance(self.info, StepInfo) else 0


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


def guard_reason(info: StepInfo) -> str | None:
    """Why marking its training skips this step: pinned, or the service's protection."""
    if info.pinned:
        return "pinned"
    return "; ".join(info.protection) or None


def step_of(node: Node | None) -> Node | None:
    while node is not None and node.kind != Kind.STEP:
        node = node.parent
    return node


def training_of(node: Node | None) -> Node | None:
    while node is not None and node.kind != Kind.TRAINING:
        node = node.parent
    return node


class TreeModel:
    """Nodes plus the flat list of visible rows (``rows``) the widget draws."""

    def __init__(self, root: RootInfo) -> None:
        self.root = Node(Kind.ROOT, root.id, root.path, root, None, expanded=True, children=[])
        self.rows: list[Node] = [self.root]
        self.sort = Sort.STEP
        self.apparent = True  # sort by apparent size (False: by disk usage)
        self._filter = ""
        self.errors: dict[int, tuple[int, str]] = {}  # file id -> (step id, why not deleted)
        self.pending = ""  # shown instead of the root's figures until they are known
        self.training_nodes: dict[int, Node] = {}
        self.step_nodes: dict[int, Node] = {}
        self._listeners: list[ModelListener] = []

    # listeners --------------------------------------------------------------------------

    def watch(self, listener: ModelListener) -> None:
        self._listeners.append(listener)

    def changed(self, structure: bool = True) -> None:
        for listener in self._listeners:
            listener(structure)

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
                node.info = info
                node.rename(info.name)
                node.size, node.disk, node.files = info.size_bytes, info.disk_bytes, info.file_count
                node.mtime_ns = info.newest_mtime_ns or 0
            new.append(node)
        self.root.children = self._sorted(new)
        self.training_nodes = {t.id: t for t in new}
        self.update_root_totals()
        self.rebuild()

    def update_root_totals(self) -> None:
        self.root.size = sum(t.size for t in self.trainings)
        self.root.disk = sum(t.disk for t in self.trainings)
        self.root.files = sum(t.files for t in self.trainings)
        self.root.mtime_ns = max((t.mtime_ns for t in self.trainings), default=0)

    def set_steps(self, training: Node, infos: Iterable[StepInfo]) -> None:
        """Children of a training (rows change on the next ``rebuild`` or ``expand``).

        Nodes already loaded are updated in place, so the cursor and expansion stay put."""
        old = {s.id: s for s in training.children or ()}
        kids = []
        for info in infos:
            node = old.get(info.id)
            if node is None:
                node = step_node(info, training)
            else:
                _refresh(
                    node, info, info.size_bytes, info.disk_bytes, info.file_count, info.mtime_ns
                )
            kids.append(node)
            self.step_nodes[info.id] = node
        training.children = self._sorted(kids)

    def set_files(self, step: Node, infos: Iterable[FileInfo]) -> None:
        old = {f.id: f for f in step.children or ()}
        kids = []
        for info in sorted(infos, key=lambda f: natural_key(f.relpath)):
            if info.id in self.errors and info.error is None:
                info = replace(info, error=self.errors[info.id][1])
            node = old.get(info.id)
            if node is None:
                node = file_node(info, step)
            else:
                _refresh(node, info, info.size_bytes, info.disk_bytes, 1, info.mtime_ns)
            kids.append(node)
        step.children = kids

    def _size(self, node: Node) -> int:
        return node.size if self.apparent else node.disk

    def _sorted(self, nodes: list[Node]) -> list[Node]:
        if self.sort == Sort.SIZE:
            return sorted(nodes, key=lambda n: (-self._size(n), n.number, n.name))
        if self.sort == Sort.AGE:
            return sorted(nodes, key=lambda n: (n.mtime_ns, n.number, n.name))
        return sorted(nodes, key=lambda n: (n.number, n.name.casefold()))

    def resort(self) -> None:
        self.root.children = self._sorted(self.trainings)
        for t in self.trainings:
            if t.children is not None:
                t.children = self._sorted(t.children)
        self.rebuild()

    def cycle_sort(self) -> Sort:
        self.sort = self.sort.next()
        self.resort()
        return self.sort

    # filter -----------------------------------------------------------------------------

    @property
    def filter(self) -> str:
        return self._filter

    def set_filter(self, text: str) -> None:
        self._filter = text
        self.rebuild()

    def visible_children(self, node: Node) -> list[Node]:
        kids = node.children or []
        needle = self._filter.lower()
        if not needle or node.kind != Kind.TRAINING or needle in node.name.lower():
            return kids
        return [s for s in kids if needle in s.name.lower()]

    def _matches(self, training: Node) -> bool:
        needle = self._filter.lower()
        if not needle or needle in training.name.lower():
            return True
        return any(needle in s.name.lower() for s in training.children or ())

    def filtered_out(self, step_ids: Iterable[int]) -> list[Node]:
        """The steps among ``step_ids`` that the filter hides."""
        needle = self._filter.lower()
        if not needle:
            return []
        out = []
        for sid in step_ids:
            s = self.step_nodes.get(sid)
            t = s.parent if s is not None else None
            if s is None or t is None:
                continue
            if needle not in t.name.lower() and needle not in s.name.lower():
                out.append(s)
        return out

    # visible rows -----------------------------------------------------------------------

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
        self.changed()

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
        self.changed()

    def expand_node(self, node: Node) -> None:
        i = self.index_of(node)
        if i >= 0:
            self.expand(i)

    def collapse(self, index: int) -> None:
        node = self.rows[index]
        if not node.expanded or node.kind == Kind.ROOT:
            return
        del self.rows[index + 1 : self.subtree_end(index)]
        node.expanded = False
        self.changed()

    def index_of(self, node: Node, hint: int = 0) -> int:
        """Row index of a visible node, trying ``hint`` first; -1 if not shown."""
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

    def file_gone(self, step_id: int, training_id: int, fid: int, size: int, disk: int) -> None:
        """Subtract a deleted file from its step, training and root totals (no notice: the
        caller applies a batch and calls ``remove_steps``)."""
        self.errors.pop(fid, None)
        for node in (self.training_nodes.get(training_id), self.step_nodes.get(step_id)):
            if node is not None:
                node.size, node.disk, node.files = (
                    node.size - size,
                    node.disk - disk,
                    node.files - 1,
                )
        s = self.step_nodes.get(step_id)
        if s is not None and s.children is not None:
            s.children = [f for f in s.children if f.id != fid]
        self.root.size -= size
        self.root.disk -= disk
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
        if step_ids or gone_files or emptied:
            dead = {id(t) for t in emptied}
            self.rows = [
                r
                for r in self.rows
                if not (
                    (r.kind == Kind.STEP and r.id in step_ids)
                    or (r.kind == Kind.FILE and r.id in gone_files)
                    or id(r) in dead
                    or (
                        r.parent is not None
                        and r.parent.kind == Kind.STEP
                        and r.parent.id in step_ids
                    )
                )
            ]
        self.changed(structure=bool(step_ids or gone_files or emptied))

    def apply_error(self, step_id: int, fid: int, error: str) -> None:
        """Record a failed unlink and show it on the file row if loaded (no notice)."""
        self.errors[fid] = (step_id, error)
        step = self.step_nodes.get(step_id)
        for f in (step.children or ()) if step is not None else ():
            if f.id == fid and isinstance(f.info, FileInfo):
                f.info = replace(f.info, error=error)

    def step_errors(self, step_id: int) -> list[str]:
        """Why files of this step were not deleted (this session's failures)."""
        return [err for sid, err in self.errors.values() if sid == step_id]

    # layout -----------------------------------------------------------------------------

    def name_need(self) -> int:
        """Cells the widest visible row needs for indent, arrow, name and a short flag; a
        row showing why it was not deleted needs room for the reason too."""
        need = max((row_need(n) for n in self.rows), default=0)
        if self.errors:
            for n in self.rows:
                why = self._error_words(n)
                if why:
                    need = max(need, row_need(n) + cell_len(why) + 1)
        return need

    def _error_words(self, node: Node) -> str:
        if isinstance(node.info, FileInfo):
            return node.info.error or ""
        if node.kind == Kind.STEP:
            errors = self.step_errors(node.id)
            return errors[0] if errors else ""
        return ""


def _refresh(node: Node, info: Info, size: int, disk: int, files: int, mtime_ns: int) -> None:
    node.info, node.size, node.disk, node.files, node.mtime_ns = info, size, disk, files, mtime_ns


def row_need(node: Node) -> int:
    indent = 2 * max(0, node.depth - 1)
    return indent + 2 + node.name_w + 2


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Order ``layer_2`` before ``layer_10``: digit runs compare as numbers."""
    out: list[tuple[int, int | str]] = []
    num = ""
    word = ""
    for ch in text:
        if ch.isdigit():
            if word:
                out.append((1, word))
                word = ""
            num += ch
        else:
            if num:
                out.append((0, int(num)))
                num = ""
            word += ch
    if num:
        out.append((0, int(num)))
    if word:
        out.append((1, word))
    return tuple(out)

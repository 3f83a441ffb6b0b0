"""The checkpoint tree, drawn with Textual's Line API: only the rows on screen are rendered.

Per-key work is a few lines of rendering plus, for structural changes, one list splice in the
model; it does not grow with the number of rows expanded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.model import Kind, Marks, MarkState, Node, TreeModel
from ckpt_tui.types import FileInfo, FileStatus, StepInfo

SIZE_W = 10
BAR_W = 10
COUNT_W = 12
AGE_W = 5
RIGHT_W = SIZE_W + 1 + BAR_W + 1 + COUNT_W + 1 + AGE_W
MARK_GLYPH = {MarkState.NONE: "○", MarkState.PARTIAL: "◐", MarkState.ALL: "●"}


class CheckpointTree(ScrollView, can_focus=True):
    """Trainings → steps → files, one line per row of ``TreeModel.rows``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False, id="tree.up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="tree.down"),
        Binding("right,l,enter", "expand", "Expand", show=False, id="tree.expand"),
        Binding("left,h", "collapse", "Collapse", show=False, id="tree.collapse"),
        Binding("home", "cursor_home", "Top", show=False, id="tree.home"),
        Binding("end", "cursor_end", "Bottom", show=False, id="tree.end"),
        Binding("pageup", "page_up_rows", "Page up", show=False, id="tree.pageup"),
        Binding("pagedown", "page_down_rows", "Page down", show=False, id="tree.pagedown"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "ckpt-tree--cursor",
        "ckpt-tree--marked",
        "ckpt-tree--partial",
        "ckpt-tree--pinned",
        "ckpt-tree--warning",
        "ckpt-tree--error",
        "ckpt-tree--dim",
        "ckpt-tree--bar",
        "ckpt-tree--root",
        "ckpt-tree--training",
        "ckpt-tree--step",
        "ckpt-tree--file",
    }

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    class Highlighted(Message):
        """The cursor moved to another row."""

        def __init__(self, node: Node) -> None:
            super().__init__()
            self.node = node

    class ExpandRequested(Message):
        """A row needs its children loaded before it can expand."""

        def __init__(self, node: Node) -> None:
            super().__init__()
            self.node = node

    def __init__(
        self,
        model: TreeModel,
        marks: Marks,
        *,
        now: Callable[[], float] = time.time,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.model = model
        self.marks = marks
        self._now = now
        self._last_highlighted: Node | None = None
        # Called synchronously on a cursor move, so the details repaint in the same frame
        # (a message would land one or two frames later).
        self.on_highlight: Callable[[Node], None] | None = None

    # model changes ----------------------------------------------------------------------

    @property
    def node(self) -> Node | None:
        rows = self.model.rows
        return rows[self.cursor] if 0 <= self.cursor < len(rows) else None

    def rows_changed(self, keep: Node | None = None) -> None:
        """The flat row list changed: resize, keep the cursor on ``keep`` if still shown."""
        rows = self.model.rows
        self.virtual_size = Size(self.scrollable_size.width, len(rows))
        if keep is not None:
            i = self.model.index_of(keep, self.cursor)
            if i >= 0:
                self.cursor = i
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        self.refresh()

    def expand_node(self, node: Node) -> None:
        """Expand an already loaded node in place."""
        i = self.model.index_of(node, self.cursor)
        if i >= 0:
            self.model.expand(i)
            self.rows_changed(self.node)

    # cursor -----------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        self._refresh_row(old)
        self._refresh_row(new)
        self.scroll_to_region(Region(0, new, 1, 1), animate=False, force=True, x_axis=False)
        node = self.node
        if node is not None and node is not self._last_highlighted:
            self._last_highlighted = node
            if self.on_highlight is not None:
                self.on_highlight(node)
            else:
                self.post_message(self.Highlighted(node))

    def _refresh_row(self, row: int) -> None:
        y = row - self.scroll_offset.y
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def refresh_node(self, node: Node) -> None:
        """Repaint one node's line and its ancestors' (their mark state may have changed)."""
        rows = self.model.rows
        top = self.scroll_offset.y
        for y in range(top, min(len(rows), top + self.size.height)):
            n = rows[y]
            if n is node or _is_ancestor(n, node):
                self._refresh_row(y)

    def _move(self, delta: int) -> None:
        self.cursor = max(0, min(len(self.model.rows) - 1, self.cursor + delta))

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_cursor_down(self) -> None:
        self._move(1)

    def action_cursor_home(self) -> None:
        self.cursor = 0

    def action_cursor_end(self) -> None:
        self.cursor = len(self.model.rows) - 1

    def action_page_up_rows(self) -> None:
        self._move(-max(1, self.size.height - 1))

    def action_page_down_rows(self) -> None:
        self._move(max(1, self.size.height - 1))

    def action_expand(self) -> None:
        node = self.node
        if node is None or not node.expandable:
            return
        if node.expanded:
            self._move(1)  # like Tree: Right on an open row steps into it
        elif node.children is None:
            self.post_message(self.ExpandRequested(node))
        else:
            self.model.expand(self.cursor)
            self.rows_changed(node)

    def action_collapse(self) -> None:
        node = self.node
        if node is None:
            return
        if node.expanded and node.kind != Kind.ROOT:
            self.model.collapse(self.cursor)
            self.rows_changed(node)
        elif node.parent is not None:
            i = self.model.index_of(node.parent, self.cursor)
            if i >= 0:
                self.cursor = i

    async def _on_click(self, event: events.Click) -> None:
        row = event.y + self.scroll_offset.y
        if 0 <= row < len(self.model.rows):
            if row == self.cursor or event.chain > 1:
                node = self.node
                if node is not None and node.expanded:
                    self.action_collapse()
                else:
                    self.action_expand()
            self.cursor = row

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self.scrollable_size.width, len(self.model.rows))

    # rendering --------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_size.width  # without the scrollbar, so no column is cut off
        row = y + self.scroll_offset.y
        base = self.rich_style
        rows = self.model.rows
        if row >= len(rows):
            return Strip.blank(width, base)
        node = rows[row]
        segments = self._segments(node, width, base)
        if row == self.cursor:
            cursor = self.get_component_rich_style("ckpt-tree--cursor")
            segments = [Segment(t, (s or base) + cursor) for t, s, _ in segments]
        return Strip(segments, width).adjust_cell_length(width, base)

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"ckpt-tree--{name}", partial=True)

    def _segments(self, node: Node, width: int, base: Style) -> list[Segment]:
        state = self.marks.state(node)
        mark_style = (
            self._style("marked")
            if state == MarkState.ALL
            else self._style("partial")
            if state == MarkState.PARTIAL
            else self._style("dim")
        )
        info = node.info
        pinned = isinstance(info, StepInfo) and info.pinned
        flag, flag_style = self._flag(node)
        indent = "  " * max(0, node.depth - 1) if node.kind != Kind.ROOT else ""
        arrow = ("▼ " if node.expanded else "▶ ") if node.expandable else "  "
        name = node.name
        left_w = max(8, width - RIGHT_W - 4)
        name_room = left_w - len(indent) - len(arrow) - (len(flag) + 1 if flag else 0)
        if len(name) > name_room:
            name = name[: max(1, name_room - 1)] + "…"
        name_style = base + self._style(node.kind.name.lower())
        if state == MarkState.ALL:
            name_style += self._style("marked")
        segs = [
            Segment(" ", base),
            Segment(MARK_GLYPH[state], base + mark_style),
            Segment("⚑" if pinned else " ", base + self._style("pinned")),
            Segment(" " + indent + arrow, base + self._style("dim")),
            Segment(name, name_style),
        ]
        used = 4 + len(indent) + len(arrow) + len(name)
        if flag:
            segs.append(Segment(" " + flag, base + flag_style))
            used += len(flag) + 1
        segs.append(Segment(" " * max(1, left_w + 4 - used), base))
        parent = node.parent
        share = node.size / parent.size if parent is not None and parent.size > 0 else 1.0
        segs += [
            Segment(fmt.size(node.size).rjust(SIZE_W) + " ", base),
            Segment(fmt.bar(share, BAR_W), base + self._style("bar")),
            Segment(" " + self._count(node).rjust(COUNT_W) + " ", base + self._style("dim")),
            Segment(fmt.age(node.mtime_ns, self._now()).rjust(AGE_W), base + self._style("dim")),
        ]
        return segs

    def _flag(self, node: Node) -> tuple[str, Style]:
        info = node.info
        if isinstance(info, FileInfo):
            if info.error:
                return "✗ " + info.error, self._style("error")
            if info.status not in (FileStatus.OK, FileStatus.OTHER):
                return "⚠ " + info.status.value, self._style("warning")
        if isinstance(info, StepInfo) and info.incomplete:
            return "⚠", self._style("warning")
        return "", self._style("dim")

    def _count(self, node: Node) -> str:
        info = node.info
        if node.kind == Kind.ROOT:
            return fmt.count(len(self.model.trainings), "training")
        if node.kind == Kind.TRAINING:
            n = len(node.children) if node.children is not None else getattr(info, "step_count", 0)
            return fmt.count(n, "step")
        if isinstance(info, StepInfo):
            if info.layer_count > 1 or info.layer_count == node.files:
                return fmt.count(info.layer_count, "layer")
            return fmt.count(node.files, "file")
        if isinstance(info, FileInfo) and info.layer is not None:
            return f"layer {info.layer}"
        return ""


def _is_ancestor(candidate: Node, node: Node) -> bool:
    p = node.parent
    while p is not None:
        if p is candidate:
            return True
        p = p.parent
    return False

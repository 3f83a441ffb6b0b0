"""The checkpoint tree, drawn with Textual's Line API: only the rows on screen are rendered.

Per-key work is a few lines of rendering plus, for structural changes, one list splice in the
model; it does not grow with the number of rows expanded. The widget listens to the model and
the marks, so nobody has to tell it that rows changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.marks import Marks
from ckpt_tui.tui.model import Kind, MarkState, Node, TreeModel
from ckpt_tui.tui.widgets.columns import Columns, plan_columns
from ckpt_tui.tui.widgets.hanging import wrap_hanging
from ckpt_tui.types import FileInfo, FileStatus, StepInfo

MARK_GLYPH = {MarkState.NONE: "○", MarkState.PARTIAL: "◐", MarkState.ALL: "●"}
PINNED_GLYPH = "⚑"
PROTECTED_GLYPH = "⊘"
HINT_LABEL_W = 16  # "  miStudio      ": a layout's pattern wraps under itself
EMPTY_LINES = (
    "No checkpoints found under this root.",
    "",
    "Recognised layouts (a step is recognised by its name and its files):",
    "  miStudio      <training>/checkpoints/checkpoint_<step>/layer_<n>[_<hook>]/*.safetensors",
    "  single layer  <training>/checkpoint_<step>/*.safetensors",
    "  HF Trainer    <run>/checkpoint-<step>/model*.safetensors, optimizer.pt, ...",
    "  SAELens       <run>/<n_samples>/ and final_<n>/ with sae_weights.safetensors, cfg.json",
    "",
    "r re-scans · q quits",
)


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
        "ckpt-tree--protected",
        "ckpt-tree--warning",
        "ckpt-tree--error",
        "ckpt-tree--dim",
        "ckpt-tree--bar",
        "ckpt-tree--root",
        "ckpt-tree--training",
        "ckpt-tree--step",
        "ckpt-tree--file",
    }

    # The one highlight path: whoever shows the highlighted row watches this reactive (its
    # watchers run in the same frame as the move, so the details repaint with the cursor).
    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    class ExpandRequested(Message):
        """A row needs its children loaded before it can expand."""

        def __init__(self, node: Node) -> None:
            super().__init__()
            self.node = node

    def __init__(
        self,
        model: TreeModel,
        marks: Marks,
        units: fmt.Units,
        *,
        now: Callable[[], float] = time.time,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.model = model
        self.marks = marks
        self.units = units
        self._now = now
        self._last_highlighted: Node | None = None
        self._columns: Columns | None = None  # recomputed on a row or width change
        self.empty_hint = False  # show the recognised layouts when a scanned root is empty
        model.watch(self._model_changed)
        marks.watch(self._marks_changed)

    # model changes ----------------------------------------------------------------------

    @property
    def node(self) -> Node | None:
        rows = self.model.rows
        return rows[self.cursor] if 0 <= self.cursor < len(rows) else None

    def _model_changed(self, structure: bool) -> None:
        """Rows changed: resize, keep the cursor on the same node if it is still shown."""
        if structure:
            self._columns = None
            self.virtual_size = Size(self.scrollable_size.width, len(self.model.rows))
            keep = self._last_highlighted
            i = self.model.index_of(keep, self.cursor) if keep is not None else -1
            self.cursor = i if i >= 0 else self.cursor  # validate_cursor clamps
        self.refresh()

    def _marks_changed(self, steps: frozenset[int] | None) -> None:
        if steps is None or len(steps) > 8:
            self.refresh()
            return
        rows = self.model.rows
        top = self.scroll_offset.y
        for y in range(top, min(len(rows), top + self.size.height)):
            n = rows[y]
            if n.kind in (Kind.ROOT, Kind.TRAINING) or _in_steps(n, steps):
                self._refresh_row(y)

    def on_resize(self, event: events.Resize) -> None:
        self._columns = None
        self.virtual_size = Size(self.scrollable_size.width, len(self.model.rows))

    # cursor -----------------------------------------------------------------------------

    def validate_cursor(self, value: int) -> int:
        """The one place the cursor is kept on a row."""
        return max(0, min(value, len(self.model.rows) - 1))

    def watch_cursor(self, old: int, new: int) -> None:
        self._refresh_row(old)
        self._refresh_row(new)
        self.scroll_to_region(Region(0, new, 1, 1), animate=False, force=True, x_axis=False)
        self._last_highlighted = self.node

    def _refresh_row(self, row: int) -> None:
        y = row - self.scroll_offset.y
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def action_cursor_up(self) -> None:
        self.cursor -= 1

    def action_cursor_down(self) -> None:
        self.cursor += 1

    def action_cursor_home(self) -> None:
        self.cursor = 0

    def action_cursor_end(self) -> None:
        self.cursor = len(self.model.rows) - 1

    def action_page_up_rows(self) -> None:
        self.cursor -= max(1, self.size.height - 1)

    def action_page_down_rows(self) -> None:
        self.cursor += max(1, self.size.height - 1)

    def action_expand(self) -> None:
        node = self.node
        if node is None or not node.expandable:
            return
        if node.expanded:
            self.cursor += 1  # like Tree: Right on an open row steps into it
        elif node.children is None:
            self.post_message(self.ExpandRequested(node))
        else:
            self.model.expand(self.cursor)

    def action_collapse(self) -> None:
        node = self.node
        if node is None:
            return
        if node.expanded and node.kind != Kind.ROOT:
            self.model.collapse(self.cursor)
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

    # rendering --------------------------------------------------------------------------

    @property
    def columns(self) -> Columns:
        """Which columns fit, for the current width and the widest visible name."""
        if self._columns is None:
            self._columns = plan_columns(self.scrollable_size.width, self.model.name_need())
        return self._columns

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_size.width  # without the scrollbar, so no column is cut off
        row = y + self.scroll_offset.y
        base = self.rich_style
        rows = self.model.rows
        if row >= len(rows):
            hint = self._hint(width) if len(rows) == 1 else []
            if 2 <= row < len(hint) + 2:
                text = fmt.head(hint[row - 2], width)
                return Strip([Segment(text, base + self._style("dim"))]).extend_cell_length(
                    width, base
                )
            return Strip.blank(width, base)
        node = rows[row]
        segments = self._segments(node, self.columns, base)
        if row == self.cursor:
            cursor = self.get_component_rich_style("ckpt-tree--cursor")
            segments = [Segment(t, (s or base) + cursor) for t, s, _ in segments]
        # measured, never trusted: a strip longer than the widget would spill into the panel
        # beside it on a partial repaint
        return Strip(segments).adjust_cell_length(width, base)

    def _hint(self, width: int) -> list[str]:
        """What an empty tree says (nothing matches the filter, or nothing was found), each
        line wrapped to the width under its own text (a layout's pattern under itself)."""
        if self.model.filter and self.model.trainings:
            lines: tuple[str, ...] = (
                f"No training or step name contains “{self.model.filter}”.",
                "",
                "Esc clears the filter · / changes it",
            )
        elif self.empty_hint:
            lines = EMPTY_LINES
        else:
            return []
        out = []
        for line in lines:
            hang = HINT_LABEL_W + 2 if line.startswith("  ") else 2
            out += [c.plain for c in wrap_hanging(Content("  " + line), width, hang)]
        return out

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"ckpt-tree--{name}", partial=True)

    def _segments(self, node: Node, cols: Columns, base: Style) -> list[Segment]:
        state = self.marks.state(node)
        mark_style = (
            self._style("marked")
            if state == MarkState.ALL
            else self._style("partial")
            if state == MarkState.PARTIAL
            else self._style("dim")
        )
        info = node.info
        guard, guard_style = " ", "dim"
        if isinstance(info, StepInfo):
            if info.pinned:
                guard, guard_style = PINNED_GLYPH, "pinned"
            elif info.protection:
                guard, guard_style = PROTECTED_GLYPH, "protected"
        indent = "  " * max(0, node.depth - 1) if node.kind != Kind.ROOT else ""
        arrow = ("▼ " if node.expanded else "▶ ") if node.expandable else "  "
        room = max(0, cols.name - len(indent) - len(arrow))
        name = fmt.ellipsize(node.name, room)
        name_style = base + self._style(node.kind.name.lower())
        if state == MarkState.ALL:
            name_style += self._style("marked")
        segs = [
            Segment(" ", base),
            Segment(MARK_GLYPH[state], base + mark_style),
            Segment(guard, base + self._style(guard_style)),
            Segment(" " + fmt.head(indent + arrow, cols.name), base + self._style("dim")),
            Segment(name, name_style),
        ]
        used = min(cols.name, len(indent) + len(arrow)) + cell_len(name)
        flag, flag_style = self._flag(node)
        if flag and cols.name - used >= 3:
            room = cols.name - used
            flag = " " + flag
            if cell_len(flag) > room:  # cut words end in an ellipsis: the details have them
                flag = fmt.head(flag, room - 1) + fmt.ELLIPSIS
            segs.append(Segment(flag, base + flag_style))
            used += cell_len(flag)
        segs.append(Segment(" " * max(0, cols.name - used), base))
        units = self.units
        size = units.pick(node.size, node.disk)
        if node.kind == Kind.ROOT and self.model.pending:  # no figure is known yet
            segs.append(Segment(" " + fmt.head(self.model.pending, cols.right - 1), base))
            return segs
        if cols.size:
            segs.append(Segment(" " + fmt.pad(units.size(size), cols.size, right=True), base))
        if cols.bar:
            parent = node.parent
            total = units.pick(parent.size, parent.disk) if parent is not None else 0
            share = size / total if total > 0 else (1.0 if size else 0.0)
            segs += [
                Segment(" ", base),
                Segment(fmt.bar(share, cols.bar), base + self._style("bar")),
            ]
        if cols.count:
            count = fmt.head(self._count(node), cols.count)
            segs.append(
                Segment(" " + fmt.pad(count, cols.count, right=True), base + self._style("dim"))
            )
        if cols.age:
            age = fmt.head(fmt.age(node.mtime_ns, self._now()), cols.age)
            segs.append(
                Segment(" " + fmt.pad(age, cols.age, right=True), base + self._style("dim"))
            )
        return segs

    def _flag(self, node: Node) -> tuple[str, Style]:
        info = node.info
        if isinstance(info, FileInfo):
            if info.error:
                return "✗ " + info.error, self._style("error")
            if info.status not in (FileStatus.OK, FileStatus.OTHER):
                return "⚠ " + info.status.value, self._style("warning")
            if info.foreign:
                return "foreign: kept", self._style("dim")
        if isinstance(info, StepInfo):
            errors = self.model.step_errors(node.id)
            if errors:
                more = f" ({fmt.count(len(errors), 'file')})" if len(errors) > 1 else ""
                return f"✗ {errors[0]}{more}", self._style("error")
            if info.incomplete:
                return "⚠ " + ", ".join(info.problems), self._style("warning")
        return "", self._style("dim")

    def _count(self, node: Node) -> str:
        info = node.info
        if node.kind == Kind.ROOT:
            n = len(self.model.trainings)
            if self.model.filter:  # the filter hides some: how many are listed
                shown = sum(1 for r in self.model.rows if r.kind == Kind.TRAINING)
                if shown != n:
                    return f"{shown:,} of {n:,}"
            return fmt.count(n, "training")
        if node.kind == Kind.TRAINING:
            n = len(node.children) if node.children is not None else getattr(info, "step_count", 0)
            if self.model.filter and node.children is not None:
                shown = len(self.model.visible_children(node))
                if shown != n:  # the filter hides some: say how many of them are listed
                    return f"{shown:,} of {n:,}"
            return fmt.count(n, "step")
        if isinstance(info, StepInfo):
            if info.layer_count > 1 or info.layer_count == node.files:
                return fmt.count(info.layer_count, "layer")
            return fmt.count(node.files, "file")
        if isinstance(info, FileInfo) and info.layer is not None:
            return f"layer {info.layer}"
        return ""


def _in_steps(node: Node, steps: frozenset[int]) -> bool:
    if node.kind == Kind.STEP:
        return node.id in steps
    return node.kind == Kind.FILE and node.parent is not None and node.parent.id in steps

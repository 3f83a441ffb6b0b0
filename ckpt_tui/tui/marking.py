"""Mark, pin, invert and keep-newest-N actions: marks are file ids held in ``Marks``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from textual.app import App

from ckpt_tui.errors import CkptError
from ckpt_tui.retention import Rules
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.model import Kind, Marks, MarkState, Node, TreeModel
from ckpt_tui.tui.screens.keep import KeepNewestScreen
from ckpt_tui.tui.workers import spawn
from ckpt_tui.types import Plan, StepInfo

if TYPE_CHECKING:
    from ckpt_tui.service import CheckpointService
    from ckpt_tui.tui.widgets.tree import CheckpointTree


def _training_of(node: Node | None) -> Node | None:
    while node is not None and node.kind != Kind.TRAINING:
        node = node.parent
    return node


def _step_of(node: Node | None) -> Node | None:
    while node is not None and node.kind != Kind.STEP:
        node = node.parent
    return node


class MarkMixin(App[int]):
    """Actions that change which files are marked (or pinned)."""

    model: TreeModel
    marks: Marks
    marks_ready: asyncio.Event

    if TYPE_CHECKING:

        @property
        def ckpt_tree(self) -> CheckpointTree: ...
        @property
        def service(self) -> CheckpointService: ...
        def refresh_status(self) -> None: ...
        def update_details(self) -> None: ...

    def pinned_ids(self, trainings: Iterable[Node]) -> set[int]:
        """File ids under pinned steps of the trainings: never marked (no steps loaded)."""
        tids = {t.id for t in trainings}
        out: set[int] = set()
        for sid in self.marks.pinned_steps:
            files = self.marks.by_step.get(sid, set())
            if files and self.marks.files[next(iter(files))].training_id in tids:
                out |= files
        return out

    def after_marks(self) -> None:
        self.ckpt_tree.refresh()
        self.refresh_status()
        self.update_details()

    def action_toggle_mark(self) -> None:
        node = self.ckpt_tree.node
        if node is None:
            return
        if not self.marks_ready.is_set():
            spawn(self, self._toggle_when_ready, node, group="mark")
            return
        step = _step_of(node)
        if step is not None and isinstance(step.info, StepInfo) and step.info.pinned:
            self.notify(
                f"{step.name} is pinned: it is never marked or deleted (p unpins it)",
                severity="warning",
            )
            return
        if node.kind in (Kind.FILE, Kind.STEP):
            self._toggle(node, self.marks.ids_of(node))
            self.ckpt_tree.refresh_node(node)
            self.refresh_status()
            self.update_details()
            if node.kind == Kind.STEP:
                self.ckpt_tree.action_cursor_down()
            return
        spawn(self, self._toggle_group, node, group="mark")

    def _toggle(self, node: Node, ids: set[int]) -> None:
        if self.marks.state(node) == MarkState.ALL or (ids and ids <= self.marks.marked):
            self.marks.unmark(ids)
        else:
            self.marks.mark(ids)

    async def _toggle_when_ready(self, node: Node) -> None:
        await self.marks_ready.wait()
        if self.ckpt_tree.node is node:
            self.action_toggle_mark()

    async def _toggle_group(self, node: Node) -> None:
        await self.marks_ready.wait()
        trainings = self.model.trainings if node.kind == Kind.ROOT else [node]
        pinned = self.pinned_ids(trainings)
        ids = self.marks.ids_of(node) - pinned
        if ids and ids <= self.marks.marked:
            self.marks.unmark(ids)
        else:
            self.marks.mark(ids)
            if pinned:
                self.notify(f"{fmt.count(len(pinned), 'file')} of pinned steps left unmarked")
        self.after_marks()

    def action_clear_marks(self) -> None:
        n = len(self.marks.marked)
        self.marks.clear()
        self.after_marks()
        if n:
            self.notify(f"Cleared {fmt.count(n, 'mark')}", timeout=2)

    def action_invert(self) -> None:
        node = self.ckpt_tree.node
        training = _training_of(node)
        spawn(self, self._invert, training, group="mark")

    async def _invert(self, training: Node | None) -> None:
        await self.marks_ready.wait()
        trainings = [training] if training is not None else self.model.trainings
        pinned = self.pinned_ids(trainings)
        ids: set[int] = set()
        for t in trainings:
            ids |= self.marks.ids_of(t)
        ids -= pinned
        on = ids & self.marks.marked
        self.marks.unmark(on)
        self.marks.mark(ids - on)
        self.after_marks()

    def action_pin(self) -> None:
        step = _step_of(self.ckpt_tree.node)
        if step is None:
            self.notify("Pins apply to steps: move to a step row", severity="warning")
            return
        spawn(self, self._pin, step, group="pin")

    async def _pin(self, step: Node) -> None:
        assert isinstance(step.info, StepInfo)
        pinned = not step.info.pinned
        try:
            await self.service.set_pinned([step.id], pinned)
        except CkptError as err:
            self.notify(str(err), severity="error")
            return
        step.info = replace(step.info, pinned=pinned)
        if pinned:
            self.marks.pinned_steps.add(step.id)
            self.marks.unmark(self.marks.by_step.get(step.id, set()))
        else:
            self.marks.pinned_steps.discard(step.id)
        self.after_marks()
        self.notify(
            f"{step.name} {'pinned: never marked or deleted' if pinned else 'unpinned'}", timeout=2
        )

    def action_keep_newest(self) -> None:
        training = _training_of(self.ckpt_tree.node)
        name = training.name if training is not None else None
        root_id = self.model.root.id

        async def preview(rules: Rules, everything: bool) -> Plan:
            names = None if everything or name is None else [name]
            return await self.service.plan_retention(root_id, rules.keep, names, rules=rules)

        self.push_screen(KeepNewestScreen(name, preview), self._keep_chosen)

    def _keep_chosen(self, plan: Plan | None) -> None:
        if plan is None:
            return
        ids = {f.file_id for s in plan.steps for f in s.files}
        self.marks.mark(ids)
        self.after_marks()
        self.notify(
            f"Marked {fmt.count(len(plan.steps), 'step')} · {fmt.size(plan.bytes)}; "
            f"kept {fmt.count(len(plan.keep), 'step')}"
        )

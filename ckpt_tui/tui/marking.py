"""The keys that change marks and pins: thin actions over ``Marks`` (where the rules live)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from textual import work
from textual.app import App

from ckpt_tui.errors import CkptError
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.loading import Loader
from ckpt_tui.tui.marks import Marks
from ckpt_tui.tui.model import Kind, Node, TreeModel, guard_reason, step_of, training_of
from ckpt_tui.types import Plan, StepInfo

if TYPE_CHECKING:
    from ckpt_tui.retention import Rules
    from ckpt_tui.service import CheckpointService
    from ckpt_tui.tui.widgets.tree import CheckpointTree


class MarkActions(App[int]):
    """Space, u, i, p and K. Reads the app's model, marks and loader; nothing else."""

    model: TreeModel
    marks: Marks
    loader: Loader
    units: fmt.Units
    marks_ready: asyncio.Event

    if TYPE_CHECKING:

        @property
        def ckpt_tree(self) -> CheckpointTree: ...
        @property
        def service(self) -> CheckpointService: ...

    def action_toggle_mark(self) -> None:
        node = self.ckpt_tree.node
        if node is None:
            return
        step = step_of(node)
        if step is not None and isinstance(step.info, StepInfo) and step.info.pinned:
            self.notify(
                f"{step.name} is pinned: it is never marked or deleted (p unpins it)",
                severity="warning",
            )
            return
        if node.kind in (Kind.FILE, Kind.STEP) and self.marks_ready.is_set():
            self.marks.toggle(node)
            if node.kind == Kind.STEP:
                self.ckpt_tree.action_cursor_down()
            return
        self._toggle_when_ready(node)

    @work(group="mark")
    async def _toggle_when_ready(self, node: Node) -> None:
        await self.marks_ready.wait()
        if node.kind in (Kind.FILE, Kind.STEP):
            self.marks.toggle(node)
            return
        # a training's (or the root's) protected steps are known once its steps are loaded
        trainings = self.model.trainings if node.kind == Kind.ROOT else [node]
        unloaded = sum(1 for t in trainings if t.children is None)
        if unloaded > 1:  # one query per 100 trainings, ~1 s per 100k files: say so at once
            self.notify(
                f"Checking which steps of {fmt.count(unloaded, 'training')} are protected…",
                timeout=2,
            )
        await self.loader.ensure_steps(self.service, trainings)
        result = self.marks.toggle_group(node)
        if result.skipped_steps:
            reasons = sorted({self.marks.guarded[s] for s in result.skipped_steps})
            self.notify(
                f"{fmt.count(len(result.skipped_steps), 'step')} left unmarked: "
                + "; ".join(reasons[:3])
                + " (Space on the step marks it anyway)",
                timeout=4,
            )

    def action_clear_marks(self) -> None:
        n = self.marks.clear()
        if n:
            self.notify(f"Cleared {fmt.count(n, 'mark')}", timeout=2)

    def action_invert(self) -> None:
        self._invert(training_of(self.ckpt_tree.node))

    @work(group="mark")
    async def _invert(self, training: Node | None) -> None:
        await self.marks_ready.wait()
        trainings = [training] if training is not None else self.model.trainings
        await self.loader.ensure_steps(self.service, trainings)
        ids: set[int] = set()
        for t in trainings:
            ids |= self.marks.ids_of(t)
        self.marks.invert(ids)

    def action_pin(self) -> None:
        step = step_of(self.ckpt_tree.node)
        if step is None:
            self.notify("Pins apply to steps: move to a step row", severity="warning")
            return
        self._pin(step)

    @work(group="pin")
    async def _pin(self, step: Node) -> None:
        assert isinstance(step.info, StepInfo)
        pinned = not step.info.pinned
        try:
            await self.service.set_pinned([step.id], pinned)
        except CkptError as err:
            self.notify(str(err), severity="error")
            return
        protection = tuple(p for p in step.info.protection if p != "pinned")
        step.info = replace(step.info, pinned=pinned, protection=protection)
        self.marks.set_pinned(step.id, pinned, guard_reason(step.info))
        self.notify(
            f"{step.name} {'pinned: never marked or deleted' if pinned else 'unpinned'}", timeout=2
        )

    def action_keep_newest(self) -> None:
        training = training_of(self.ckpt_tree.node)
        name = training.name if training is not None else None
        root_id = self.model.root.id
        from ckpt_tui.tui.screens.keep import KeepNewestScreen  # first use: not at start-up

        async def preview(rules: Rules, everything: bool) -> Plan:
            names = None if everything or name is None else [name]
            return await self.service.plan_retention(root_id, rules.keep, names, rules=rules)

        self.push_screen(KeepNewestScreen(name, preview, self.units), self._keep_chosen)

    def _keep_chosen(self, plan: Plan | None) -> None:
        if plan is None:
            return
        self.marks.mark(f.file_id for s in plan.steps for f in s.files)
        self.notify(
            f"Marked {fmt.count(len(plan.steps), 'step')} · {self.units.size(plan.bytes)}; "
            f"kept {fmt.count(len(plan.keep), 'step')}"
        )

"""Plan, confirm and carry out a deletion while the UI keeps working.

Progress arrives per file on the event loop; it is buffered here and applied at most ~20 times
a second (``flush_delete``): rows of removed steps go in one list pass per flush.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.app import App

from ckpt_tui.errors import CkptError
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.model import Kind, Marks, TreeModel
from ckpt_tui.tui.screens.confirm import ConfirmFacts, ConfirmScreen
from ckpt_tui.tui.widgets.status import ProgressPanel
from ckpt_tui.tui.workers import spawn
from ckpt_tui.types import DeleteProgress, ExecuteResult, ItemResult, Outcome, Plan

if TYPE_CHECKING:
    from ckpt_tui.service import CheckpointService
    from ckpt_tui.tui.widgets.tree import CheckpointTree

GONE = (Outcome.DELETED, Outcome.ALREADY_GONE)
FAILED = (Outcome.FAILED, Outcome.CHANGED)


class DeleteMixin(App[int]):
    """The d / Delete flow: plan → confirm (→ confirm open files) → execute with progress."""

    model: TreeModel
    marks: Marks
    read_only: bool
    scanning: bool
    freed_session: int
    clock: Callable[[], float]

    if TYPE_CHECKING:

        @property
        def ckpt_tree(self) -> CheckpointTree: ...
        @property
        def service(self) -> CheckpointService: ...
        def refresh_status(self) -> None: ...
        def refresh_disk(self) -> None: ...
        def update_details(self) -> None: ...
        def mark_dirty(self) -> None: ...
        def rel_path(self, path: str) -> str: ...
        async def reload(self) -> None: ...

    def init_delete_state(self) -> None:
        self.deleting = False
        self.cancel_event = threading.Event()
        self._progress: DeleteProgress | None = None
        self._gone: list[int] = []
        self._failed: list[ItemResult] = []
        self._removed_steps: set[int] = set()
        self._freed_before = 0
        self._started = 0.0
        self.last_result: ExecuteResult | None = None
        self._plans: dict[int, Plan | None] = {}  # confirm dialog -> its checked plan

    def action_delete(self) -> None:
        if self.read_only:
            self.notify("Read-only mode: deletion is off", severity="warning")
            return
        if self.deleting or self.scanning:
            self.notify("Wait for the running scan or deletion to finish", severity="warning")
            return
        ids = set(self.marks.marked)
        node = self.ckpt_tree.node
        if not ids and node is not None and node.kind != Kind.ROOT:
            ids = self.marks.ids_of(node)
        if not ids:
            self.notify(
                "Nothing marked: Space marks a row, K marks all but the newest N",
                severity="warning",
            )
            return
        # The dialog opens at once with the marks' figures; the plan (every file checked
        # against the index and live-writer protection) replaces them when it is ready, and
        # only then does y confirm: the bytes promised are the plan's.
        screen = ConfirmScreen(self.pending_facts(ids))
        self.push_screen(screen, partial(self._answered, screen, ids))
        spawn(self, self._plan_for, screen, ids, group="plan", exclusive=True)

    def pending_facts(self, ids: set[int]) -> ConfirmFacts:
        files = self.marks.files
        disk = getattr(self, "disk", None)
        return ConfirmFacts(
            title="Delete these checkpoints?",
            steps=len({files[i].step_id for i in ids if i in files}),
            partial_steps=0,
            files=len(ids),
            bytes=sum(files[i].size_bytes for i in ids if i in files),
            free_before=disk.free if disk is not None else None,
            paths=(),
            pending=True,
        )

    async def _plan_for(self, screen: ConfirmScreen, ids: set[int]) -> None:
        try:
            plan = await self.service.plan_files(self.model.root.id, ids)
        except CkptError as err:
            self._plans[id(screen)] = None
            screen.dismiss(False)
            self.notify(str(err), title="Cannot plan the deletion", severity="error")
            return
        self._plans[id(screen)] = plan
        if plan.empty:
            screen.dismiss(False)
            reasons = sorted({p.reason for p in plan.protected})
            self.notify("Nothing can be deleted: " + "; ".join(reasons[:3]), severity="warning")
            return
        if screen.is_attached:
            screen.show(self.confirm_facts(plan))

    def _answered(self, screen: ConfirmScreen, ids: set[int], yes: bool | None) -> None:
        plan = self._plans.pop(id(screen), None)
        if plan is None or plan.empty:
            if not yes and plan is None and screen.facts.pending:
                self.notify("Cancelled: nothing was deleted", timeout=2)
            return
        self._confirmed(plan, ids, yes)

    def _confirmed(self, plan: Plan, ids: set[int], yes: bool | None) -> None:
        if not yes:
            self.notify("Cancelled: nothing was deleted", timeout=2)
            return
        needs = [p for p in plan.protected if p.needs_confirmation]
        if not needs:
            self.start_delete(plan)
            return
        facts = ConfirmFacts(
            title=f"{fmt.count(len(needs), 'file')} open in another process: delete anyway?",
            steps=0,
            partial_steps=0,
            files=len(needs),
            bytes=0,
            free_before=None,
            paths=tuple(f"{self.rel_path(p.path)}  ({p.reason})" for p in needs),
            action="Delete open files",
        )
        self.push_screen(ConfirmScreen(facts), partial(self._confirmed_open, plan, ids))

    def _confirmed_open(self, plan: Plan, ids: set[int], yes: bool | None) -> None:
        if not yes:
            self.start_delete(plan)  # the open files stay; the rest goes as confirmed
            return
        spawn(self, self._replan_open, ids, group="plan", exclusive=True)

    async def _replan_open(self, ids: set[int]) -> None:
        try:
            plan = await self.service.planner.plan_files(self.model.root.id, ids, include_open=True)
        except CkptError as err:
            self.notify(str(err), severity="error")
            return
        self.start_delete(plan, allow_open=True)

    def confirm_facts(self, plan: Plan) -> ConfirmFacts:
        paths: list[str] = []
        for s in plan.steps:
            if s.whole:
                paths.append(self.rel_path(s.path) + "/")
            else:
                paths += [f.path_rel for f in s.files]
        disk = getattr(self, "disk", None)
        return ConfirmFacts(
            title="Delete these checkpoints?",
            steps=len(plan.steps),
            partial_steps=sum(1 for s in plan.steps if not s.whole),
            files=plan.file_count,
            bytes=plan.bytes,
            free_before=disk.free if disk is not None else None,
            paths=tuple(paths),
            protected=tuple(f"{self.rel_path(p.path)}: {p.reason}" for p in plan.protected),
        )

    def start_delete(self, plan: Plan, *, allow_open: bool = False) -> None:
        self.deleting = True
        self.cancel_event = threading.Event()
        self._progress = None
        self._freed_before = self.freed_session
        self._started = self.clock()
        total = float(plan.bytes or plan.file_count)
        self.query_one(ProgressPanel).start(
            f"Deleting {fmt.count(plan.file_count, 'file')}…", total, "Esc cancels"
        )
        self.mark_dirty()
        spawn(self, self._execute, plan, allow_open, group="delete", exclusive=True)

    def cancel_delete(self) -> None:
        if self.deleting and not self.cancel_event.is_set():
            self.cancel_event.set()
            self.notify("Cancelling after the current file…", timeout=2)

    def _on_progress(self, p: DeleteProgress) -> None:
        self._progress = p
        if p.item is not None:
            if p.item.outcome in GONE:
                self._gone.append(p.item.file_id)
            elif p.item.outcome in FAILED:
                self._failed.append(p.item)
        self._removed_steps.update(p.removed_step_ids)
        self.mark_dirty()

    async def _execute(self, plan: Plan, allow_open: bool) -> None:
        result: ExecuteResult | None = None
        try:
            result = await self.service.execute(
                plan, on_progress=self._on_progress, cancel=self.cancel_event, allow_open=allow_open
            )
        except CkptError as err:
            self.notify(str(err), title="Deletion stopped", severity="error")
        finally:
            self.flush_delete()
            self.deleting = False
            self.query_one(ProgressPanel).stop()
        self.last_result = result
        if result is not None:
            self.freed_session = self._freed_before + result.freed_bytes
            for item in result.failed:  # also the ones refused before any unlink
                self.model.apply_error(item.step_id, item.file_id, item.error or item.outcome)
            self._summarise(result)
        await self.reload()  # totals from the index (not a re-scan): step counts, problems
        self.refresh_disk()

    def _summarise(self, result: ExecuteResult) -> None:
        gone = len(result.deleted)
        msg = f"Deleted {fmt.count(gone, 'file')}, freed {fmt.size(result.freed_bytes)}"
        if result.removed_step_ids:
            n = len(result.removed_step_ids)
            msg += f"; removed {n:,} step {'directory' if n == 1 else 'directories'}"
        if result.cancelled:
            msg = "Cancelled. " + msg
        self.notify(msg, title="Deletion finished", timeout=6)
        if result.stopped:
            self.notify(result.stopped, title="Deletion stopped", severity="error", timeout=10)
        failed = result.failed
        if failed:
            first = failed[0]
            self.notify(
                f"{fmt.count(len(failed), 'file')} could not be deleted and stay marked. "
                f"First: {self.rel_path(first.path)}: {first.error or first.outcome}",
                title="Some files were not deleted",
                severity="error",
                timeout=12,
            )

    def flush_delete(self) -> None:
        """Apply buffered progress: drop deleted rows, mark failures, update totals."""
        gone, self._gone = self._gone, []
        failed, self._failed = self._failed, []
        steps, self._removed_steps = self._removed_steps, set()
        touched: set[int] = set()
        for fid in gone:
            brief = self.marks.forget(fid)
            if brief is not None:
                self.model.file_gone(brief)
                touched.add(brief.training_id)
        for item in failed:
            self.model.apply_error(item.step_id, item.file_id, item.error or item.outcome)
        if gone or steps:
            node = self.ckpt_tree.node
            self.model.remove_steps(steps, set(gone), touched)
            self.ckpt_tree.rows_changed(node)
        elif failed:
            self.ckpt_tree.refresh()
        p = self._progress
        if p is not None:
            self.freed_session = self._freed_before + p.bytes_freed
            elapsed = self.clock() - self._started
            self.query_one(ProgressPanel).set(
                f"Deleting {p.files_done:,}/{p.files_total:,} files · "
                f"{fmt.size(p.bytes_freed)} of {fmt.size(p.bytes_total)} · "
                f"{fmt.rate(p.bytes_freed, elapsed)}",
                float(p.bytes_freed if p.bytes_total else p.files_done),
            )
        self.refresh_disk()

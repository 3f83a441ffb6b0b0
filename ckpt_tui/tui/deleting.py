"""The d / Delete flow: confirm (its dialog plans) → open files (asks again) → a DeletionRun.

The run owns its progress, cancel event and timings; these actions only start it, show it
and apply what it took from the deleter to the model and the marks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual import work
from textual.app import App

from ckpt_tui.errors import CkptError
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.marks import Marks, disk_of
from ckpt_tui.tui.model import Kind, TreeModel
from ckpt_tui.tui.widgets.status import ProgressPanel
from ckpt_tui.types import DiskUsage, Interrupted, Plan, StepInfo

if TYPE_CHECKING:
    from ckpt_tui.service import CheckpointService
    from ckpt_tui.tui.run import DeletionRun
    from ckpt_tui.tui.widgets.tree import CheckpointTree


class DeleteActions(App[int]):
    """d, Esc while deleting, q while deleting. Reads the app's model, marks, units and run."""

    model: TreeModel
    marks: Marks
    units: fmt.Units
    read_only: bool
    scanning: bool
    freed_session: int
    freed_session_disk: int
    clock: Callable[[], float]
    deletion: DeletionRun | None

    if TYPE_CHECKING:

        @property
        def ckpt_tree(self) -> CheckpointTree: ...
        @property
        def service(self) -> CheckpointService: ...
        def rel_path(self, path: str) -> str: ...
        def disk_now(self) -> DiskUsage | None: ...
        def refresh_disk(self) -> None: ...
        def refresh_status(self) -> None: ...
        def mark_dirty(self) -> None: ...
        async def reload(self) -> None: ...

    def report_interrupted(self, pending: Interrupted | None) -> None:
        """Say at start that a deletion was interrupted (the tree shows its steps with ⚠):
        what a read-only browser leaves, and that d finishes it first."""
        if pending is None:
            return
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in pending.first_steps[:2]]
        steps = ", ".join(names) + (", …" if pending.steps > 2 else "")
        what = f"{fmt.count(pending.files, 'file')} in {fmt.count(pending.steps, 'step')} ({steps})"
        if pending.running:
            self.notify(
                f"Another ckpt-tui is deleting {what} through this index right now.",
                title="Deletion running elsewhere",
                severity="warning",
                timeout=12,
            )
            return
        since = f" {fmt.age(int(pending.since * 1e9), time.time())} ago" if pending.since else ""
        then = (
            "Read-only: nothing is finished here; a deleting ckpt-tui (d, prune, rm) finishes it."
            if self.read_only
            else "The next deletion (d) finishes it first; d on its own steps finishes just it."
        )
        self.notify(
            f"A deletion stopped{since} before it finished: {what}. {then}",
            title="Interrupted deletion",
            severity="warning",
            timeout=12,
        )

    # asking -----------------------------------------------------------------------------

    def action_delete_off(self) -> None:
        if self.deletion is not None:
            self.notify("A deletion is running: wait for it, or Esc stops it", severity="warning")
            return
        self.notify(
            "Opened with --read-only: nothing can be deleted. Open it again without "
            "--read-only to delete.",
            severity="warning",
        )

    def action_delete(self) -> None:
        if self.deletion is not None or self.scanning:
            self.notify("Wait for the running scan or deletion to finish", severity="warning")
            return
        ids = set(self.marks.marked)
        node = self.ckpt_tree.node
        if not ids and node is not None and node.kind != Kind.ROOT:
            ids = self.marks.ids_of(node)  # nothing marked: the highlighted row
        if not ids:
            self.notify(
                "Nothing marked: Space marks a row, K marks all but the newest N",
                severity="warning",
            )
            return
        # The dialogs and the run are imported on first use: not on the path to the first frame.
        from ckpt_tui.tui.screens.confirm import ConfirmScreen, DeleteRequest

        files = self.marks.files
        step_ids = {files[i].step_id for i in ids if i in files}
        hidden = self.model.filtered_out(step_ids)
        nodes = self.model.step_nodes
        step_paths = {
            sid: nodes[sid].info.path
            for sid in step_ids
            if sid in nodes and isinstance(nodes[sid].info, StepInfo)
        }
        request = DeleteRequest(
            root_id=self.model.root.id,
            file_ids=frozenset(ids),
            steps=len(step_ids),
            bytes=sum(files[i].size_bytes for i in ids if i in files),
            disk_bytes=sum(disk_of(files[i]) for i in ids if i in files),
            hidden=tuple(f"{s.parent.name}/{s.name}" if s.parent else s.name for s in hidden),
            rel=self.rel_path,
            step_paths=step_paths,
        )
        screen = ConfirmScreen(self.service, request, self.units, self.disk_now)
        self.push_screen(screen, partial(self._confirmed, request.file_ids))

    def _confirmed(self, requested: frozenset[int], plan: Plan | None) -> None:
        if plan is None:
            self.notify("Cancelled: nothing was deleted", timeout=2)
        elif plan.empty:  # the dialog accepts an empty plan only to finish an interrupted run
            self._finish_interrupted()
        elif any(p.needs_confirmation for p in plan.protected):
            from ckpt_tui.tui.screens.open_files import OpenFilesScreen

            self.push_screen(
                OpenFilesScreen(self.service, plan, self.rel_path),
                partial(self._open_answered, requested, plan),
            )
        else:
            self.start_run(plan, requested)

    def _open_answered(self, requested: frozenset[int], asked: Plan, plan: Plan | None) -> None:
        if plan is None:
            self.notify("Cancelled: nothing was deleted", timeout=2)
        else:  # a new plan is one with the open files in it: the deleter must allow them
            self.start_run(plan, requested, allow_open=plan is not asked)

    # running ----------------------------------------------------------------------------

    def start_run(self, plan: Plan, requested: frozenset[int], *, allow_open: bool = False) -> None:
        from ckpt_tui.tui.run import DeletionRun

        run = DeletionRun(plan, requested, allow_open=allow_open, clock=self.clock)
        self.deletion = run
        _done, total = run.fraction()
        self.query_one(ProgressPanel).start(run.label(self.units), total, "Esc stops · q quits")
        self.refresh_bindings()
        self.mark_dirty()
        self._execute(run)

    @work(group="delete", exclusive=True)
    async def _execute(self, run: DeletionRun) -> None:
        try:
            result = await run.execute(self.service)
        except CkptError as err:
            self.notify(str(err), title="Deletion stopped", severity="error")
            result = None
        finally:
            self.deletion = None
            if self.query(ProgressPanel):  # none when the app is closing
                self.flush_deletion(run)
                self.query_one(ProgressPanel).stop()
                self.refresh_bindings()
        if not self.query(ProgressPanel):
            return
        if result is not None:
            for item in result.failed:  # also the ones refused before any unlink
                self.model.apply_error(item.step_id, item.file_id, item.error or item.outcome)
            self.marks.unmark(run.requested - run.remaining_marks(result))
            for n in run.notices(result, self.units, self.rel_path):
                self.notify(n.message, title=n.title, severity=n.severity, timeout=n.timeout)  # type: ignore[arg-type]
        if run.quit_when_done:
            self.exit(0)
            return
        await self.reload()  # totals from the index (not a re-scan): step counts, problems
        self.refresh_disk()

    @work(group="delete", exclusive=True)
    async def _finish_interrupted(self) -> None:
        try:
            files = await self.service.finish_interrupted()
        except CkptError as err:
            self.notify(str(err), title="Interrupted deletion not finished", severity="error")
            return
        self.notify(
            f"Finished the interrupted deletion: {fmt.count(files, 'file')}",
            title="Deletion finished",
        )
        await self.reload()  # its rows and folders are gone: steps, totals and marks follow
        self.refresh_disk()

    def flush_deletion(self, run: DeletionRun) -> None:
        """Apply what the run buffered: drop deleted rows, mark failures, update totals."""
        batch = run.take()
        if batch:
            touched: set[int] = set()
            for g in batch.gone:
                brief = self.marks.forget(g.file_id)
                if brief is not None:
                    self.model.file_gone(g.step_id, brief.training_id, g.file_id, g.size, g.disk)
                    touched.add(brief.training_id)
            for item in batch.failed:
                self.model.apply_error(item.step_id, item.file_id, item.error or item.outcome)
            self.model.remove_steps(batch.removed_steps, {g.file_id for g in batch.gone}, touched)
            self.marks.settled()
            self.freed_session += sum(g.freed for g in batch.gone)
            self.freed_session_disk += sum(g.freed_disk for g in batch.gone)
        progress, total = run.fraction()
        self.query_one(ProgressPanel).set(run.label(self.units), progress, total)
        self.refresh_disk()

    def action_stop(self) -> None:
        run = self.deletion
        if run is not None and run.cancel():
            self.notify("Stopping after the current file…", timeout=2)

    def action_quit_app(self) -> None:
        run = self.deletion
        if run is None:
            self.exit(0)
            return
        from ckpt_tui.tui.screens.quit import QuitWhileDeletingScreen

        def progress() -> str | None:
            return run.label(self.units) if self.deletion is run else None

        self.push_screen(QuitWhileDeletingScreen(progress), self._quit_answered)

    def _quit_answered(self, stop: bool | None) -> None:
        run = self.deletion
        if not stop:
            return
        if run is None:  # it finished while the question was open
            self.exit(0)
            return
        run.quit_when_done = True
        run.cancel()
        self.notify("Stopping after the current file, then quitting…", timeout=3)

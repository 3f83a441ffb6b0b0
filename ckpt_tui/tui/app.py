"""The Textual app: composition, loading, status, scanning and the browsing actions.

``CkptApp`` is the factory shared by ``run_tui``, the tests and the screenshot script. State
lives where it is used: rows in ``TreeModel``, marks in ``Marks`` (both tell the views when they
change), a running deletion in ``DeletionRun`` (see ``deleting.py`` for the actions around it),
each dialog's plan in the dialog.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input

from ckpt_tui import fs
from ckpt_tui.errors import CkptError
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui import keys
from ckpt_tui.tui.deleting import DeleteActions
from ckpt_tui.tui.loading import Loader
from ckpt_tui.tui.marking import MarkActions
from ckpt_tui.tui.marks import Marks
from ckpt_tui.tui.model import Kind, Node, TreeModel, training_of
from ckpt_tui.tui.widgets.details import DetailsPanel
from ckpt_tui.tui.widgets.status import ProgressPanel, StatusBar, StatusFacts
from ckpt_tui.tui.widgets.tree import CheckpointTree
from ckpt_tui.types import DiskUsage, RootInfo, ScanProgress, TrainingInfo

if TYPE_CHECKING:
    from ckpt_tui.tui.run import DeletionRun

FLUSH_SECONDS = 0.05  # coalesce progress repaints to ~20 Hz
SCAN_RELOAD_SECONDS = 1.0  # during a scan, re-query the trainings this often
DISK_POLL_SECONDS = 5.0
EXIT_WAIT_SECONDS = 10.0  # how long quitting waits for the workers to unwind
DETAILS_MIN_WIDTH = 100  # below this the details panel is hidden unless v shows it (below)


class CkptApp(DeleteActions, MarkActions, App[int]):
    """Browse one root's checkpoints, mark them, delete them safely."""

    CSS_PATH = "app.tcss"
    TITLE = "ckpt-tui"
    BINDINGS: ClassVar[list[BindingType]] = keys.BINDINGS

    def __init__(
        self,
        root: str,
        db: str | None = None,
        *,
        read_only: bool = False,
        service: CheckpointService | None = None,
        now: Callable[[], float] | None = None,
        display_root: str | None = None,
        disk_usage: Callable[[str], DiskUsage] | None = None,
        clock: Callable[[], float] | None = None,
        si: bool = False,
    ) -> None:
        super().__init__()
        self.root_path = root
        self.root_dir = root  # normalised by the service once the root is registered
        self.db_url = db
        self.read_only = read_only
        self.svc: CheckpointService | None = service
        self._owns_service = service is None
        self.now = now or time.time
        self.clock = clock or time.monotonic  # elapsed times (rates); frozen in snapshots
        self.display_root = display_root
        self._disk_fn = disk_usage
        self.units = fmt.Units(si=si)
        self.model = TreeModel(RootInfo(0, root, None))
        # named as it will be once the index is open; no figures until the index has them
        self.model.root.rename(os.path.basename(self.show_path(root).rstrip("/")) or root)
        self.model.pending = "opening…"
        self.marks = Marks()
        self.loader = Loader(self.model, self.marks)
        self.marks_ready = asyncio.Event()  # set once the file map behind marks is loaded
        self.disk: DiskUsage | None = None
        self.freed_session = 0  # bytes deleted since the app opened, apparent and on disk
        self.freed_session_disk = 0
        self.deletion: DeletionRun | None = None  # "deleting" means "a run exists"
        self.scan_progress: ScanProgress | None = None
        self.scanning = False
        self._last_scan_reload = 0.0
        self._ticker: Timer | None = None
        self._cursor_placed = False
        self._details_node: Node | None = None  # what the details panel shows
        self._details_choice: bool | None = None  # v: the user's say over the automatic one
        self.note = ""
        self.marks.watch(lambda _steps: self._marks_changed())

    # composition ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(self.units, id="status")
        with Horizontal(id="main"):
            yield CheckpointTree(self.model, self.marks, self.units, now=self.now, id="tree")
            yield DetailsPanel(
                self.model, self.units, now=self.now, show_path=self.show_path, id="details"
            )
        yield ProgressPanel(id="progress")
        yield Input(placeholder="filter by name (Enter keeps it, Esc clears)", id="filter")
        yield Footer()

    @property
    def ckpt_tree(self) -> CheckpointTree:
        return self.query_one("#tree", CheckpointTree)

    @property
    def deleting(self) -> bool:
        return self.deletion is not None

    def show_path(self, path: str) -> str:
        """A path for display, with the root replaced by the display root (for snapshots)."""
        if self.display_root and path.startswith(self.root_dir):
            return self.display_root + path[len(self.root_dir) :]
        return path

    def rel_path(self, path: str) -> str:
        root = self.root_dir.rstrip("/") + "/"
        return path[len(root) :] if path.startswith(root) else path

    def on_mount(self) -> None:
        self.query_one(ProgressPanel).display = False
        self.query_one("#filter", Input).display = False
        self.ckpt_tree.focus()
        self.watch(self.ckpt_tree, "cursor", self._cursor_moved, init=False)
        self._place_details(self.size.width)
        self.refresh_disk()
        self.set_interval(DISK_POLL_SECONDS, self.refresh_disk)
        self._startup()

    def on_resize(self, event: events.Resize) -> None:
        self._place_details(event.size.width)

    async def on_unmount(self) -> None:
        if self.deletion is not None:
            self.deletion.cancel()  # stops after the current file and records the batch
        await self._stop_workers()
        if self.svc is not None and self._owns_service:
            await self.svc.close()

    async def _stop_workers(self) -> None:
        """Cancel every worker but the deletion (told to stop above) and let them all unwind
        before the index closes. A worker cancelled mid-query rolls its session back through
        the driver's thread; with the index closed under it, it waited forever for that
        thread and the exit hung."""
        workers = [w for w in self.workers if not w.is_finished]
        for w in workers:
            if w.group != "delete":
                w.cancel()
        waits = [asyncio.ensure_future(w.wait()) for w in workers]
        if not waits:
            return
        done, late = await asyncio.wait(waits, timeout=EXIT_WAIT_SECONDS)
        for t in late:
            t.cancel()
        for t in done:
            t.cancelled() or t.exception()  # retrieved: a failure was shown when it happened

    # loading ----------------------------------------------------------------------------

    @property
    def service(self) -> CheckpointService:
        assert self.svc is not None, "the service is not open yet"
        return self.svc

    @work(group="startup", exclusive=True)
    async def _startup(self) -> None:
        try:
            if self.svc is None:
                self.svc = await CheckpointService.open(self.db_url)
            info = await self.svc.add_root(self.root_path)
        except CkptError as err:
            self.exit(1, message=f"ckpt-tui: {err}")
            return
        self.model.root.id, self.model.root.info = info.id, info
        self.root_dir = info.path
        self.model.root.rename(os.path.basename(self.show_path(info.path)) or info.path)
        self.refresh_disk()
        await self.reload()
        self.set_pending("")
        interrupted = await self.svc.interrupted()
        if not self.is_running:  # closing: its screen is gone
            return
        self.report_interrupted(interrupted)
        if info.scanned_at is None:
            self.start_scan(None)
        else:
            self.note = f"indexed {fmt.age(int(info.scanned_at * 1e9), self.now())} ago · r rescans"
            self._show_empty()
            self.refresh_status()

    async def reload(self) -> None:
        """Re-query trainings, the file map and every loaded level; keep marks and cursor."""
        await self.loader.reload(self.service, self.model.root.id)
        if not self.is_running:  # closing: its screen is gone
            return
        if not self._cursor_placed and len(self.model.rows) > 1:
            self._cursor_placed = True
            self.ckpt_tree.cursor = 1  # start on the first training (rows may come mid-scan)
        self.marks_ready.set()
        self.refresh_status()
        self.update_details()

    @on(CheckpointTree.ExpandRequested)
    def _expand_requested(self, event: CheckpointTree.ExpandRequested) -> None:
        self._load_and_expand(event.node)

    @work(group="expand")
    async def _load_and_expand(self, node: Node) -> None:
        await self.loader.load_children(self.service, node)
        self.model.expand_node(node)

    # details ----------------------------------------------------------------------------

    def _cursor_moved(self) -> None:
        node = self.ckpt_tree.node
        if node is not self._details_node:
            self.update_details()

    def update_details(self) -> None:
        panels = self.query(DetailsPanel)
        if not panels or not panels.first().display:  # hidden, or the app is closing
            return
        panel = panels.first()
        node = self.ckpt_tree.node
        self._details_node = node
        panel.show(node, self.marks)
        if node is not None and node.kind == Kind.FILE and self.svc is not None:
            self._load_details(node)
        elif node is not None and node.kind == Kind.TRAINING and self.svc is not None:
            self._load_last_deletion(node)

    @work(group="details", exclusive=True)
    async def _load_details(self, node: Node) -> None:
        details = await self.service.file_details(node.id)
        if self.ckpt_tree.node is node:
            self.query_one(DetailsPanel).show(node, self.marks, details)

    @work(group="details", exclusive=True)
    async def _load_last_deletion(self, node: Node) -> None:
        info = node.info
        if not isinstance(info, TrainingInfo):
            return
        last = await self.service.last_deletion(info)
        if last is not None and self.ckpt_tree.node is node:
            self.query_one(DetailsPanel).show(node, self.marks, last=last)

    def _place_details(self, width: int) -> None:
        """Beside the tree when there is room; hidden below DETAILS_MIN_WIDTH unless v asked
        for it, then under the tree so names keep their width."""
        wide = width >= DETAILS_MIN_WIDTH
        show = self._details_choice if self._details_choice is not None else wide
        self.query_one("#main").set_class(not wide, "-stacked")
        panel = self.query_one(DetailsPanel)
        if panel.display != show:
            panel.display = show
            self.update_details()

    def action_details(self) -> None:
        self._details_choice = not self.query_one(DetailsPanel).display
        self._place_details(self.size.width)

    # status -----------------------------------------------------------------------------

    def _marks_changed(self) -> None:
        self.refresh_status()
        self.update_details()

    def refresh_disk(self) -> None:
        self.disk = self.disk_now()
        self.refresh_status()

    def disk_now(self) -> DiskUsage | None:
        try:
            fn = self._disk_fn or (self.svc.disk_usage if self.svc else fs.disk_usage)
            return fn(self.root_dir)
        except OSError:
            return None

    def refresh_status(self) -> None:
        bars = self.query(StatusBar)
        if not bars:  # closing: a worker finishing late finds the screen gone
            return
        root, marks = self.model.root, self.marks
        bars.first().show(
            StatusFacts(
                root=self.show_path(self.root_dir),
                indexed_bytes=root.size,
                indexed_disk=root.disk,
                indexed_files=root.files,
                trainings=len(self.model.trainings),
                disk=self.disk,
                marked_files=len(marks.marked),
                marked_steps=marks.marked_steps(),
                marked_bytes=self.units.pick(marks.marked_bytes, marks.marked_disk),
                freed=self.units.pick(self.freed_session, self.freed_session_disk),
                sort=self.model.sort.value,
                filter=self.model.filter,
                read_only=self.read_only,
                note=self.note,
                pending=self.model.pending,
            )
        )

    def set_pending(self, word: str) -> None:
        """What the root row and the header say while no figure is known ("" once one is)."""
        self.model.pending = word
        self.model.changed(structure=False)
        self.refresh_status()

    def mark_dirty(self) -> None:
        """Progress arrived: repaint on the next tick, not per event."""
        if self._ticker is None:
            self._ticker = self.set_interval(FLUSH_SECONDS, self._tick)

    def _tick(self) -> None:
        if not self.is_running:  # closing: its screen is gone
            return
        if self.scanning:
            self._flush_scan()
        if self.deletion is not None:
            self.flush_deletion(self.deletion)
        if not self.scanning and self.deletion is None and self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    # scanning ---------------------------------------------------------------------------

    def start_scan(self, training: Node | None) -> None:
        if self.scanning or self.deleting:
            self.notify("Wait for the running scan or deletion to finish", severity="warning")
            return
        self.scanning = True
        what = training.name if training is not None else self.show_path(self.root_dir)
        self.query_one(ProgressPanel).start(f"Scanning {what}…", None, "rows appear as found")
        self.note = "scanning…"
        if not self.model.root.files:  # a first scan: no figure is known yet
            self.set_pending("scanning…")
        self.mark_dirty()
        self._scan(training)

    def _on_scan_progress(self, p: ScanProgress) -> None:
        self.scan_progress = p

    def _flush_scan(self) -> None:
        p = self.scan_progress
        if p is not None:
            self.query_one(ProgressPanel).set(
                f"Scanning: {fmt.count(p.files_seen, 'file')} · {self.units.size(p.bytes_seen)} · "
                f"{fmt.count(p.steps_found, 'step')}",
                0,
            )
        now = time.monotonic()
        if now - self._last_scan_reload >= SCAN_RELOAD_SECONDS:
            self._last_scan_reload = now
            self._reload_during_scan()

    @work(group="reload", exclusive=True)
    async def _reload_during_scan(self) -> None:
        await self.reload()

    @work(group="scan", exclusive=True)
    async def _scan(self, training: Node | None) -> None:
        tid = training.id if training is not None else None
        try:
            result = await self.service.scan(
                self.root_path, on_progress=self._on_scan_progress, training_id=tid
            )
        except CkptError as err:
            self.notify(str(err), title="Scan failed", severity="error")
            result = None
        finally:
            self.scanning = False
            self.model.pending = ""  # shown by the reload below (the app may be closing)
            for panel in self.query(ProgressPanel):  # none when the app is closing
                panel.stop()
        if not self.query(ProgressPanel):
            return
        self.workers.cancel_group(self, "reload")
        await self.reload()
        if result is not None:
            self.note = f"scanned {fmt.count(result.files, 'file')} in {result.seconds:.1f} s"
            for n in result.notes[:3]:
                self.notify(n, severity="warning")
        self._show_empty()
        self.refresh_status()

    def _show_empty(self) -> None:
        """A scanned root with no checkpoints says so, with the layouts it recognises."""
        for tree in self.query(CheckpointTree):  # none when closing
            tree.empty_hint = not self.model.trainings
            tree.refresh()

    # browsing actions -------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "delete":  # read-only: hidden, and d explains; while deleting: Stop shows
            return not self.read_only and not self.deleting
        if action == "delete_off":
            return self.read_only or self.deleting
        if action == "stop":
            return self.deleting
        if action == "clear_filter":
            return not self.deleting and bool(
                self.model.filter or self.query_one("#filter", Input).display
            )
        return True

    def action_help(self) -> None:
        from ckpt_tui.tui.screens.help import HelpScreen  # not needed for the first frame

        self.push_screen(HelpScreen())

    def action_history(self) -> None:
        if self.svc is None:
            return
        from ckpt_tui.tui.screens.history import HistoryScreen

        self.push_screen(HistoryScreen(self.svc, self.root_dir, self.units))

    def action_sort(self) -> None:
        sort = self.model.cycle_sort()
        self.refresh_status()
        self.notify(f"Sorted by {sort.words}", timeout=1.5)

    def action_apparent(self) -> None:
        self.units.apparent = not self.units.apparent
        self.model.apparent = self.units.apparent
        self.model.resort()
        self.refresh_status()
        self.update_details()
        self.notify(f"Sizes: {self.units.mode}", timeout=1.5)

    def action_rescan(self) -> None:
        self.start_scan(training_of(self.ckpt_tree.node))

    def action_expand(self) -> None:
        self.ckpt_tree.action_expand()

    def action_collapse(self) -> None:
        self.ckpt_tree.action_collapse()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.model.filter
        box.focus()
        self.refresh_bindings()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._apply_filter(event.value)

    @work(group="filter", exclusive=True)
    async def _apply_filter(self, text: str) -> None:
        if text:
            await self.loader.ensure_steps(self.service, self.model.trainings)
        self.model.set_filter(text)
        self.refresh_status()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#filter", Input).display = False
        self.ckpt_tree.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self.ckpt_tree.focus()
        self._apply_filter("")
        self.refresh_bindings()

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, title, help_text in keys.COMMANDS:
            if action == "delete" and self.read_only:
                continue
            yield SystemCommand(title, help_text, partial(self.run_action, action))

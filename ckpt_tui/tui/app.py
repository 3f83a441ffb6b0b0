"""The Textual app: composition, loading from the service, scanning, and the key actions.

``CkptApp`` is the factory shared by ``run_tui`` and the tests; deletion lives in
``deleting.DeleteMixin``, marking in ``marking.MarkMixin``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import ClassVar

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input

from ckpt_tui.errors import CkptError
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.deleting import DeleteMixin
from ckpt_tui.tui.marking import MarkMixin
from ckpt_tui.tui.model import Kind, Marks, Node, TreeModel
from ckpt_tui.tui.screens.help import HelpScreen
from ckpt_tui.tui.widgets.details import DetailsPanel
from ckpt_tui.tui.widgets.status import ProgressPanel, StatusBar, StatusFacts
from ckpt_tui.tui.widgets.tree import CheckpointTree
from ckpt_tui.tui.workers import spawn
from ckpt_tui.types import DiskUsage, RootInfo, ScanProgress

FLUSH_SECONDS = 0.05  # coalesce progress repaints to ~20 Hz
SCAN_RELOAD_SECONDS = 1.0  # during a scan, re-query the trainings this often
DISK_POLL_SECONDS = 5.0


class CkptApp(DeleteMixin, MarkMixin, App[int]):
    """Browse one root's checkpoints, mark them, delete them safely."""

    CSS_PATH = "app.tcss"
    TITLE = "ckpt-tui"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_mark", "Mark", id="mark"),
        Binding("K", "keep_newest", "Keep N", id="keep"),
        Binding("p", "pin", "Pin", id="pin"),
        Binding("u", "clear_marks", "Unmark all", id="clear"),
        Binding("i", "invert", "Invert", show=False, id="invert"),
        Binding("d,delete", "delete", "Delete", id="delete"),
        Binding("escape", "escape", "Cancel", show=False, id="escape"),
        Binding("r", "rescan", "Rescan", id="rescan"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("s", "sort", "Sort", id="sort"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("q", "quit_app", "Quit", id="quit"),
    ]

    # (action, title, help) for the command palette
    COMMANDS_TABLE: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("toggle_mark", "Mark / unmark", "Toggle the mark on the highlighted row"),
        ("keep_newest", "Keep newest N…", "Preview and mark all but the newest N steps"),
        ("pin", "Pin / unpin step", "A pinned step is never marked or deleted"),
        ("clear_marks", "Clear marks", "Unmark everything"),
        ("invert", "Invert marks", "Invert the marks within the highlighted training"),
        ("delete", "Delete marked…", "Delete the marked files after a confirm"),
        ("rescan", "Rescan", "Re-scan the highlighted training, or everything"),
        ("filter", "Filter…", "Filter trainings and steps by name"),
        ("sort", "Cycle sort", "Order steps by step, size or age"),
        ("expand", "Expand row", "Expand the highlighted row"),
        ("collapse", "Collapse row", "Collapse the highlighted row"),
        ("help", "Help", "Keys and glyphs"),
    )

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
    ) -> None:
        super().__init__()
        self.root_path = root
        self.root_dir = root  # normalised by the service once the root is registered
        self._cursor_placed = False
        self.marks_ready = asyncio.Event()  # set once the file map behind marks is loaded
        self.db_url = db
        self.read_only = read_only
        self.svc: CheckpointService | None = service
        self._owns_service = service is None
        self.now = now or time.time
        self.clock = clock or time.monotonic  # elapsed times (rates); frozen in snapshots
        self.display_root = display_root
        self._disk_fn = disk_usage
        self.model = TreeModel(RootInfo(0, root, None))
        self.marks = Marks()
        self.disk: DiskUsage | None = None
        self.freed_session = 0
        self.scanning = False
        self.scan_progress: ScanProgress | None = None
        self._last_scan_reload = 0.0
        self._ticker: Timer | None = None
        self._dirty = False
        self.note = ""
        self.init_delete_state()

    # composition ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="main"):
            yield CheckpointTree(self.model, self.marks, now=self.now, id="tree")
            yield DetailsPanel(now=self.now, show_path=self.show_path, id="details")
        yield ProgressPanel(id="progress")
        yield Input(placeholder="filter by name (Enter keeps it, Esc clears)", id="filter")
        yield Footer()

    @property
    def ckpt_tree(self) -> CheckpointTree:
        return self.query_one("#tree", CheckpointTree)

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
        self.ckpt_tree.on_highlight = lambda _node: self.update_details()
        self.refresh_status()
        self.set_interval(DISK_POLL_SECONDS, self.refresh_disk)
        spawn(self, self._startup, group="startup", exclusive=True)

    async def on_unmount(self) -> None:
        self.cancel_event.set()
        if self.svc is not None and self._owns_service:
            await self.svc.close()

    # loading ----------------------------------------------------------------------------

    @property
    def service(self) -> CheckpointService:
        assert self.svc is not None, "the service is not open yet"
        return self.svc

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
        self.model.root.name = os.path.basename(self.show_path(info.path)) or info.path
        self.refresh_disk()
        await self.reload()
        if info.scanned_at is None:
            self.start_scan(None)
        else:
            self.note = f"indexed {fmt.age(int(info.scanned_at * 1e9), self.now())} ago · r rescans"
            self.refresh_status()

    async def reload(self) -> None:
        """Re-query trainings, the file map and every loaded level; keep marks and cursor."""
        svc, root_id = self.service, self.model.root.id
        cursor = self.ckpt_tree.node
        key = cursor.key if cursor is not None else None
        self.model.set_trainings(await svc.trainings(root_id))
        for t in list(self.model.trainings):
            if t.children is not None:
                self.model.set_steps(t, await svc.steps(t.id))
                for s in t.children or ():
                    if s.children is not None:
                        self.model.set_files(s, await svc.files(s.id))
        self.model.rebuild()
        i = self.model.find(key) if key is not None else -1
        if not self._cursor_placed and len(self.model.rows) > 1:
            self._cursor_placed, i = True, 1  # start on the first training
        if i >= 0:
            self.ckpt_tree.cursor = i
        self.ckpt_tree.rows_changed()
        self.refresh_status()
        # The file map (every file's id and size, for marks) comes after the rows are on
        # screen: with 100k files it is most of the start-up time. Marking waits for it.
        self.marks.load(await svc.file_map(root_id))
        self.marks_ready.set()
        self.ckpt_tree.refresh()
        self.refresh_status()
        self.update_details()

    async def ensure_steps(self, trainings: Iterable[Node]) -> None:
        """Load the steps of trainings not expanded yet, all in one query."""
        todo = [t for t in trainings if t.children is None]
        if todo:
            found = await self.service.steps_of(t.id for t in todo)
            for t in todo:
                if t.children is None:
                    self.model.set_steps(t, found.get(t.id, []))

    @on(CheckpointTree.ExpandRequested)
    def _expand_requested(self, event: CheckpointTree.ExpandRequested) -> None:
        spawn(self, self._load_and_expand, event.node, group="expand")

    async def _load_and_expand(self, node: Node) -> None:
        if node.kind == Kind.TRAINING:
            await self.ensure_steps([node])
        elif node.kind == Kind.STEP and node.children is None:
            self.model.set_files(node, await self.service.files(node.id))
        self.ckpt_tree.expand_node(node)

    @on(CheckpointTree.Highlighted)
    def _highlighted(self, event: CheckpointTree.Highlighted) -> None:
        self.update_details()

    def update_details(self) -> None:
        node = self.ckpt_tree.node
        self.query_one(DetailsPanel).show(node, self.marks)
        if node is not None and node.kind == Kind.FILE and self.svc is not None:
            spawn(self, self._load_details, node, group="details", exclusive=True)

    async def _load_details(self, node: Node) -> None:
        details = await self.service.file_details(node.id)
        if self.ckpt_tree.node is node:
            self.query_one(DetailsPanel).show(node, self.marks, details)

    # status -----------------------------------------------------------------------------

    def refresh_disk(self) -> None:
        try:
            fn = self._disk_fn or (self.svc.disk_usage if self.svc else None)
            self.disk = fn(self.root_dir) if fn else None
        except OSError:
            self.disk = None
        self.refresh_status()

    def refresh_status(self) -> None:
        root = self.model.root
        self.query_one(StatusBar).show(
            StatusFacts(
                root=self.show_path(self.root_dir),
                indexed_bytes=root.size,
                indexed_files=root.files,
                trainings=len(self.model.trainings),
                disk=self.disk,
                marked_files=len(self.marks.marked),
                marked_steps=self.marks.marked_steps(),
                marked_bytes=self.marks.marked_bytes,
                freed=self.freed_session,
                sort=self.model.sort.value,
                filter=self.model.filter,
                read_only=self.read_only,
                note=self.note,
            )
        )

    def mark_dirty(self) -> None:
        """Progress arrived: repaint on the next tick, not per event."""
        self._dirty = True
        if self._ticker is None:
            self._ticker = self.set_interval(FLUSH_SECONDS, self._tick)

    def _tick(self) -> None:
        if not self._dirty:
            if not self.scanning and not self.deleting and self._ticker is not None:
                self._ticker.stop()
                self._ticker = None
            return
        self._dirty = False
        if self.scanning:
            self._flush_scan()
        if self.deleting:
            self.flush_delete()

    # scanning ---------------------------------------------------------------------------

    def start_scan(self, training: Node | None) -> None:
        if self.scanning or self.deleting:
            self.notify("Wait for the running scan or deletion to finish", severity="warning")
            return
        self.scanning = True
        what = training.name if training is not None else self.show_path(self.root_dir)
        self.query_one(ProgressPanel).start(f"Scanning {what}…", None, "rows appear as found")
        self.note = "scanning…"
        self.mark_dirty()
        spawn(self, self._scan, training, group="scan", exclusive=True)

    def _on_scan_progress(self, p: ScanProgress) -> None:
        self.scan_progress = p
        self.mark_dirty()

    def _flush_scan(self) -> None:
        p = self.scan_progress
        if p is not None:
            self.query_one(ProgressPanel).set(
                f"Scanning: {fmt.count(p.files_seen, 'file')} · {fmt.size(p.bytes_seen)} · "
                f"{fmt.count(p.steps_found, 'step')}",
                0,
            )
        now = time.monotonic()
        if now - self._last_scan_reload >= SCAN_RELOAD_SECONDS:
            self._last_scan_reload = now
            spawn(self, self.reload, group="reload", exclusive=True)

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
            self.query_one(ProgressPanel).stop()
        self.workers.cancel_group(self, "reload")
        await self.reload()
        if result is not None:
            self.note = f"scanned {fmt.count(result.files, 'file')} in {result.seconds:.1f} s"
            for n in result.notes[:3]:
                self.notify(n, severity="warning")
        self.refresh_status()

    # actions ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "delete" and self.read_only:
            return None  # shown greyed out: deletion is off
        return True

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_sort(self) -> None:
        node = self.ckpt_tree.node
        sort = self.model.cycle_sort()
        self.ckpt_tree.rows_changed(node)
        self.refresh_status()
        self.notify(f"Steps sorted by {sort.value}", timeout=1.5)

    def action_rescan(self) -> None:
        node = self.ckpt_tree.node
        while node is not None and node.kind not in (Kind.TRAINING, Kind.ROOT):
            node = node.parent
        self.start_scan(node if node is not None and node.kind == Kind.TRAINING else None)

    def action_expand(self) -> None:
        self.ckpt_tree.action_expand()

    def action_collapse(self) -> None:
        self.ckpt_tree.action_collapse()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.model.filter
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        spawn(self, self._apply_filter, event.value, group="filter", exclusive=True)

    async def _apply_filter(self, text: str) -> None:
        if text:
            await self.ensure_steps(self.model.trainings)
        node = self.ckpt_tree.node
        self.model.filter = text
        self.model.rebuild()
        self.ckpt_tree.rows_changed(node)
        self.refresh_status()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#filter", Input).display = False
        self.ckpt_tree.focus()

    def action_escape(self) -> None:
        if self.deleting:
            self.cancel_delete()
            return
        box = self.query_one("#filter", Input)
        if box.display or self.model.filter:
            box.value = ""
            box.display = False
            self.ckpt_tree.focus()
            spawn(self, self._apply_filter, "", group="filter", exclusive=True)

    async def action_quit_app(self) -> None:
        if self.deleting:
            self.cancel_delete()
            self.notify("Stopping after the current file…")
            await self.workers.wait_for_complete()
        self.exit(0)

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, title, help_text in self.COMMANDS_TABLE:
            if action == "delete" and self.read_only:
                continue
            yield SystemCommand(title, help_text, partial(self.run_action, action))

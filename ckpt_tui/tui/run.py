"""One deletion run: its plan, cancel event, timings and the progress not yet on screen.

Textual-free. "Deleting" means "a run exists": the app holds at most one. Progress arrives
per file on the event loop (``on_progress``); ``take`` hands the buffered part to the view at
most ~20 times a second, so rows of removed steps go in one list pass per flush.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ckpt_tui.history import RunContext
from ckpt_tui.tui import format as fmt
from ckpt_tui.types import DeleteProgress, ExecuteResult, ItemResult, Outcome, Plan, PlannedFile

if TYPE_CHECKING:
    from ckpt_tui.service import CheckpointService

GONE = (Outcome.DELETED, Outcome.ALREADY_GONE)
FAILED = (Outcome.FAILED, Outcome.CHANGED)
# what to do when the filesystem stops a run, by the OS error it reported
ADVICE = {
    errno.EROFS: "the filesystem is mounted read-only: remount it read-write (or delete from "
    "a machine that can write to it), then d deletes the rest",
    errno.EIO: "the disk reported an I/O error: check it (dmesg, SMART) before trying again",
    errno.ENOSPC: "the filesystem is full and refused even a delete: free some space another "
    "way, then d deletes the rest",
    errno.EDQUOT: "a disk quota blocks the delete: ask for quota or delete elsewhere first",
}


@dataclass(frozen=True, slots=True)
class Gone:
    """A deleted file with the sizes the plan promised for it."""

    file_id: int
    step_id: int
    size: int  # the file's sizes, to subtract from its step's and training's totals
    disk: int
    freed: int  # what its unlink gave back (0 when it was already gone or hard-linked)
    freed_disk: int


@dataclass(slots=True)
class Batch:
    """Progress taken since the last flush."""

    gone: list[Gone] = field(default_factory=list)
    failed: list[ItemResult] = field(default_factory=list)
    removed_steps: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.gone or self.failed or self.removed_steps)


@dataclass(frozen=True, slots=True)
class Notice:
    """One toast the app shows when the run ends."""

    message: str
    title: str
    severity: str = "information"
    timeout: float = 6.0


class DeletionRun:
    """A plan being carried out, and everything the view needs to show it."""

    def __init__(
        self,
        plan: Plan,
        requested: frozenset[int],
        *,
        allow_open: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.requested = requested  # the marked files the user asked to delete
        self.allow_open = allow_open
        self.cancel_event = threading.Event()
        self.quit_when_done = False
        self._clock = clock
        self.started = clock()
        self.progress: DeleteProgress | None = None
        self.result: ExecuteResult | None = None
        self._planned: dict[int, PlannedFile] = {f.file_id: f for f in plan.files}
        self._batch = Batch()
        self.freed = 0  # apparent bytes given back so far
        self.freed_disk = 0

    # running ----------------------------------------------------------------------------

    async def execute(self, service: CheckpointService) -> ExecuteResult:
        self.result = await service.execute(
            self.plan,
            on_progress=self.on_progress,
            cancel=self.cancel_event,
            allow_open=self.allow_open,
            ctx=RunContext(face="tui", command="TUI"),
        )
        return self.result

    def on_progress(self, p: DeleteProgress) -> None:
        self.progress = p
        item = p.item
        if item is not None:
            if item.outcome in GONE:
                f = self._planned.get(item.file_id)
                size, disk = (f.size_bytes, f.disk_bytes) if f is not None else (0, 0)
                freed = freed_disk = 0
                if item.outcome == Outcome.DELETED and f is not None:
                    freed, freed_disk = f.freed_bytes, f.freed_disk_bytes
                self.freed += freed
                self.freed_disk += freed_disk
                self._batch.gone.append(
                    Gone(item.file_id, item.step_id, size, disk, freed, freed_disk)
                )
            elif item.outcome in FAILED:
                self._batch.failed.append(item)
        self._batch.removed_steps.update(p.removed_step_ids)

    def take(self) -> Batch:
        batch, self._batch = self._batch, Batch()
        return batch

    def cancel(self) -> bool:
        """Ask the deleter to stop after the current file; False if already asked."""
        if self.cancel_event.is_set():
            return False
        self.cancel_event.set()
        return True

    @property
    def cancelling(self) -> bool:
        return self.cancel_event.is_set()

    def elapsed(self) -> float:
        return self._clock() - self.started

    # words ------------------------------------------------------------------------------

    def fraction(self) -> tuple[float, float]:
        """(progress, total) for the progress bar: bytes when the plan has any, else files."""
        p = self.progress
        if self.plan.bytes:
            return float(p.bytes_freed if p else 0), float(self.plan.bytes)
        return float(p.files_done if p else 0), float(self.plan.file_count)

    def label(self, units: fmt.Units) -> str:
        p = self.progress
        done = p.files_done if p else 0
        total = p.files_total if p else self.plan.file_count
        text = (
            f"Deleting {done:,}/{total:,} files · {units.size(self.freed)}/"
            f"{units.size(self.plan.bytes)} · {fmt.rate(units, self.freed, self.elapsed())}"
        )
        return "Stopping… " + text if self.cancelling else text

    def remaining_marks(self, result: ExecuteResult) -> set[int]:
        """The requested files that stay marked: those that failed with an OS error and those
        the run did not reach. Protected, foreign-kept and changed files are unmarked (the
        dialog said they stay), so no mark lingers on something the user was told is kept."""
        keep = {r.file_id for r in result.results if r.outcome in (Outcome.FAILED, Outcome.SKIPPED)}
        return keep & self.requested

    def notices(
        self, result: ExecuteResult, units: fmt.Units, rel: Callable[[str], str]
    ) -> list[Notice]:
        """What the user is told when the run ends."""
        out = []
        gone = sum(1 for r in result.results if r.outcome in GONE)
        msg = f"Deleted {fmt.count(gone, 'file')}, freed {units.size(self.freed_disk)} on disk"
        if self.freed != self.freed_disk:
            msg += f" ({units.size(self.freed)} apparent)"
        if result.removed_step_ids:
            msg += f"; removed {fmt.count(len(result.removed_step_ids), 'step directory')}"
        if result.cancelled:
            msg = "Stopped. " + msg
        if result.recovered:
            msg = (
                f"First finished an interrupted deletion "
                f"({fmt.count(result.recovered, 'file')}). " + msg
            )
        out.append(Notice(msg, "Deletion finished"))
        if result.stopped:
            out.append(Notice(self._stopped_words(result), "Deletion stopped", "error", 20))
        failed = [r for r in result.results if r.outcome == Outcome.FAILED]
        if failed:
            first = failed[0]
            out.append(
                Notice(
                    f"{fmt.count(len(failed), 'file')} could not be deleted and stay marked "
                    f"(✗ in the tree; d tries again). First: {rel(first.path)}: "
                    f"{first.error or first.outcome}",
                    "Some files were not deleted",
                    "error",
                    12,
                )
            )
        changed = [r for r in result.results if r.outcome == Outcome.CHANGED]
        if changed:
            out.append(
                Notice(
                    f"{fmt.count(len(changed), 'file')} changed since the scan and were left "
                    f"alone, unmarked; r re-scans them. First: {rel(changed[0].path)}",
                    "Changed since the scan",
                    "warning",
                    12,
                )
            )
        return out

    def _stopped_words(self, result: ExecuteResult) -> str:
        not_reached = sum(1 for r in result.results if r.outcome == Outcome.SKIPPED)
        text = result.stopped or ""
        advice = next(
            (words for code, words in ADVICE.items() if os.strerror(code) in text),
            "fix the cause, then d deletes the rest",
        )
        where = text.removeprefix("stopped: ").split(";", 1)[0]
        return (
            f"{where}. Nothing after it was touched; {fmt.count(not_reached, 'file')} "
            f"still marked. {advice[0].upper() + advice[1:]}."
        )

"""Frozen dataclasses that cross layer boundaries (service -> CLI / TUI).

ORM objects never leave ``db/`` and ``service``; everything a face shows is one of these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FileStatus(enum.StrEnum):
    """What the scanner concluded about one file."""

    OK = "ok"  # a valid safetensors file
    TRUNCATED = "truncated"  # safetensors header promises more data than the file holds
    CORRUPT = "corrupt"  # header unreadable or inconsistent
    UNSUPPORTED = "unsupported"  # well-formed but uses something we do not know (dtype, ...)
    OTHER = "other"  # any non-safetensors regular file (optimizer.pt, cfg.json, ...)
    SYMLINK = "symlink"  # a symlink inside a step: listed, never followed, counted or deleted
    SPECIAL = "special"  # FIFO, socket, device: listed, never touched


class RowState(enum.StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"


@dataclass(frozen=True, slots=True)
class RootInfo:
    id: int
    path: str
    scanned_at: float | None


@dataclass(frozen=True, slots=True)
class TrainingInfo:
    id: int
    root_id: int
    name: str  # the training folder relative to the root (unique among the root's trainings)
    path: str  # absolute: the training folder
    step_count: int
    file_count: int
    size_bytes: int  # apparent bytes of every file under its steps
    disk_bytes: int  # allocated bytes
    min_step: int | None
    max_step: int | None
    newest_mtime_ns: int | None
    layer_count: int  # distinct layers among the training's files
    steps_path: str = ""  # absolute: the folder holding its steps (``path/checkpoints``)


@dataclass(frozen=True, slots=True)
class StepInfo:
    id: int
    training_id: int
    step: int
    dirname: str  # e.g. "checkpoint_498000"
    path: str  # absolute
    file_count: int
    layer_count: int
    size_bytes: int
    disk_bytes: int
    mtime_ns: int  # newest file mtime
    pinned: bool
    incomplete: bool  # fewer layers than the training's fullest step, or a file not ok
    problems: tuple[str, ...] = ()  # human words for why it is incomplete
    unit: str = "step"  # "samples" for SAELens, whose steps count training samples
    config: tuple[tuple[str, str], ...] = ()  # SAELens cfg.json summary (d_in, d_sae, hook...)
    # complete and every checkpoint file valid: what keep rules and "newest" count
    valid: bool = True
    # why no rule will plan it (newest valid step, pinned, recent, ...); empty when it may go
    protection: tuple[str, ...] = ()
    foreign_count: int = 0  # files under it that its layout does not name (kept by default)
    foreign_bytes: int = 0


@dataclass(frozen=True, slots=True)
class FileInfo:
    id: int
    step_id: int
    relpath: str  # relative to the step directory, e.g. "layer_7/checkpoint.safetensors"
    path: str  # absolute
    layer: int | None
    hook: str | None
    size_bytes: int
    disk_bytes: int
    mtime_ns: int
    status: FileStatus
    state: RowState
    error: str | None
    foreign: bool = False  # not a file the step's layout names: kept unless asked for


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FileDetails:
    file: FileInfo
    inode: int
    nlink: int
    tensors: tuple[TensorInfo, ...]
    parameter_count: int
    metadata: dict[str, str]
    header_error: str | None


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """Reported through the scanner's callback; ``steps_found`` grows as rows appear."""

    root: str
    dirs_seen: int
    files_seen: int
    bytes_seen: int
    steps_found: int
    headers_read: int
    current: str
    done: bool = False


@dataclass(frozen=True, slots=True)
class ScanResult:
    root_id: int
    root: str
    trainings: int
    steps: int
    files: int
    size_bytes: int
    headers_read: int
    headers_reused: int
    removed_files: int
    seconds: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file the plan will unlink, with the identity it must still have."""

    file_id: int
    relparts: tuple[str, ...]  # components from the root, validated against the layout
    size_bytes: int
    disk_bytes: int
    inode: int
    mtime_ns: int
    nlink: int
    is_symlink: bool = False  # the link itself goes; its target is never touched or counted
    dev: int = 0
    last_link: bool = False  # every hard link is in the plan and this one goes last

    @property
    def frees(self) -> bool:
        return not self.is_symlink and (self.nlink <= 1 or self.last_link)

    @property
    def path_rel(self) -> str:
        return "/".join(self.relparts)

    @property
    def freed_bytes(self) -> int:
        """Bytes this unlink gives back: nothing for a link or a file with other hard links."""
        return self.size_bytes if self.frees else 0

    @property
    def freed_disk_bytes(self) -> int:
        return self.disk_bytes if self.frees else 0


@dataclass(frozen=True, slots=True)
class PlannedStep:
    step_id: int
    training: str
    training_id: int
    step: int
    path: str  # absolute step directory
    relparts: tuple[str, ...]  # step directory components from the root
    files: tuple[PlannedFile, ...]
    whole: bool  # every file of the step is planned (so the step directory should go)
    indexed_files: int = 0  # rows the step has in the index (planned, foreign or neither)

    @property
    def size_bytes(self) -> int:
        return sum(f.freed_bytes for f in self.files)

    @property
    def disk_bytes(self) -> int:
        return sum(f.freed_disk_bytes for f in self.files)


@dataclass(frozen=True, slots=True)
class KeptStep:
    step_id: int
    training: str
    step: int
    path: str
    size_bytes: int
    reasons: tuple[str, ...]  # "newest", "pinned", "keep newest 3", "modified 30 s ago", ...


@dataclass(frozen=True, slots=True)
class Protected:
    """A file or step the user asked for that will not be deleted, and why."""

    path: str
    reason: str
    file_id: int | None = None
    step_id: int | None = None
    needs_confirmation: bool = False  # an open file: deletable only with a second confirm
    step_path: str = ""  # the step folder (absolute), when known


@dataclass(frozen=True, slots=True)
class ForeignFile:
    """A file under a planned step that its layout does not name: kept, and shown."""

    path: str  # absolute
    size_bytes: int
    step_id: int


@dataclass(frozen=True, slots=True)
class Plan:
    """An immutable deletion plan: exact files, directories that go if emptied, bytes to free."""

    root_id: int
    root: str
    steps: tuple[PlannedStep, ...]
    keep: tuple[KeptStep, ...] = ()
    protected: tuple[Protected, ...] = ()
    created_at: float = 0.0
    foreign: tuple[ForeignFile, ...] = ()  # kept (not in ``steps``) unless include_foreign
    # folders above the steps to rmdir-if-empty after them (a whole training), deepest first
    training_dirs: tuple[tuple[str, ...], ...] = ()

    @property
    def files(self) -> tuple[PlannedFile, ...]:
        return tuple(f for s in self.steps for f in s.files)

    @property
    def file_count(self) -> int:
        return sum(len(s.files) for s in self.steps)

    @property
    def bytes(self) -> int:
        """Apparent bytes this plan frees (a hard-linked file once, when its last link goes)."""
        return sum(s.size_bytes for s in self.steps)

    @property
    def disk_bytes(self) -> int:
        """Allocated bytes (st_blocks x 512) this plan frees, same hard-link rule."""
        return sum(s.disk_bytes for s in self.steps)

    @property
    def empty(self) -> bool:
        return not self.steps


class Outcome(enum.StrEnum):
    DELETED = "deleted"
    ALREADY_GONE = "already_gone"  # ENOENT at unlink: the row goes, nothing was freed by us
    CHANGED = "changed"  # identity differs from the scan: left alone
    FAILED = "failed"  # OS error: row kept with the error
    SKIPPED = "skipped"  # cancelled or stopped before reaching it, or claimed by another process


@dataclass(frozen=True, slots=True)
class ItemResult:
    file_id: int
    step_id: int
    path: str
    outcome: Outcome
    freed_bytes: int = 0
    error: str | None = None
    freed_disk_bytes: int = 0


@dataclass(frozen=True, slots=True)
class DeleteProgress:
    """Per-item progress of ``execute``; ``removed_dirs`` lists directories rmdir'ed just now."""

    item: ItemResult | None
    files_done: int
    files_total: int
    bytes_freed: int
    bytes_total: int
    removed_dirs: tuple[str, ...] = ()
    removed_step_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecuteResult:
    results: tuple[ItemResult, ...]
    removed_dirs: tuple[str, ...]
    removed_step_ids: tuple[int, ...]
    freed_bytes: int
    cancelled: bool = False
    stopped: str | None = None  # why the run stopped early (EROFS, EIO, ...), resumable
    seconds: float = 0.0
    freed_disk_bytes: int = 0  # allocated bytes given back (st_blocks x 512)
    recovered: int = 0  # files of an interrupted earlier deletion finished first
    run_id: int | None = None  # its record in the deletion history
    appeared: tuple[str, ...] = ()  # files found in planned steps that the scan never saw

    @property
    def deleted(self) -> tuple[ItemResult, ...]:
        """Files this run unlinked (not the ones already gone or changed)."""
        return tuple(r for r in self.results if r.outcome == Outcome.DELETED)

    @property
    def already_gone(self) -> tuple[ItemResult, ...]:
        return tuple(r for r in self.results if r.outcome == Outcome.ALREADY_GONE)

    @property
    def changed(self) -> tuple[ItemResult, ...]:
        return tuple(r for r in self.results if r.outcome == Outcome.CHANGED)

    @property
    def failed(self) -> tuple[ItemResult, ...]:
        return tuple(r for r in self.results if r.outcome in (Outcome.FAILED, Outcome.CHANGED))

    @property
    def ok(self) -> bool:
        return not self.failed and self.stopped is None and not self.cancelled


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Rows an interrupted deletion claimed (``deleting``) and did not finish; reported by
    read-only commands, finished by the next deleting one."""

    files: int
    steps: int
    since: float | None  # when the first was claimed (epoch seconds)
    size_bytes: int
    first_steps: tuple[str, ...]  # up to 5 step paths, relative to their root


@dataclass(frozen=True, slots=True)
class FileBrief:
    """The least a face needs to mark files and sum their sizes without loading them all."""

    id: int
    step_id: int
    training_id: int
    size_bytes: int
    pinned: bool = False  # its step is pinned: never marked


@dataclass(frozen=True, slots=True)
class StepTree:
    step: StepInfo
    files: tuple[FileInfo, ...]


@dataclass(frozen=True, slots=True)
class TrainingTree:
    training: TrainingInfo
    steps: tuple[StepTree, ...]


@dataclass(frozen=True, slots=True)
class DiskUsage:
    total: int
    used: int
    free: int

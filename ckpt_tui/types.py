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


# Index ``meta`` keys of miStudio rows whose files a deletion run claimed and has not yet
# deleted from miStudio's database (the intent, written with the claim; see ``deletion``).
MISTUDIO_PENDING = "mistudio-pending:"


# miStudio training statuses its own retention skips: ckpt-tui protects them too
MISTUDIO_ACTIVE = ("pending", "initializing", "running", "paused")


@dataclass(frozen=True, slots=True)
class MiStudioTraining:
    """What miStudio's database says about a training (``--mistudio``)."""

    training_id: str  # miStudio's id, the training folder's name (``train_<8hex>``)
    status: str  # pending, initializing, running, paused, completed, failed, cancelled
    stale_rows: int = 0  # its checkpoint rows whose file is gone

    @property
    def active(self) -> bool:
        return self.status in MISTUDIO_ACTIVE


@dataclass(frozen=True, slots=True)
class MiStudioStep:
    """A step's rows in miStudio's ``checkpoints`` table (one per layer and hook)."""

    rows: int  # 0: the folder has no miStudio record (an orphan)
    is_best: bool
    loss: float | None  # mean over the step's rows
    l0_sparsity: float | None


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
    mistudio: MiStudioTraining | None = None  # with --mistudio, when miStudio knows it


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
    mistudio: MiStudioStep | None = None  # with --mistudio, in a training miStudio knows


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
    forcable: bool = False  # lifted by force (the TUI's "include protected steps")


@dataclass(frozen=True, slots=True)
class ForeignFile:
    """A file under a planned step that its layout does not name: kept, and shown."""

    path: str  # absolute
    size_bytes: int
    step_id: int


@dataclass(frozen=True, slots=True)
class MiStudioRow:
    """One row of miStudio's ``checkpoints`` table a plan deletes."""

    id: str
    training_id: str
    step: int
    storage_path: str  # as miStudio stored it (``/data/trainings/...`` inside its container)
    path: str  # the file it names, on this machine (absolute)
    step_id: int | None = None  # the planned step it goes with; None: a stale row
    file_id: int | None = None
    is_best: bool = False


@dataclass(frozen=True, slots=True)
class MiStudioPlan:
    """The miStudio side of a plan: rows deleted once every planned file of their step is
    gone, and stale rows (file already gone) deleted with ``--stale-records``."""

    database: str  # user@host:port/db, never the password
    rows: tuple[MiStudioRow, ...] = ()
    stale: tuple[MiStudioRow, ...] = ()
    stale_kept: int = 0  # stale rows in scope left alone (no --stale-records)
    trainings: tuple[tuple[int, str], ...] = ()  # planned step id -> miStudio training id
    force: bool = False  # protections were lifted: not checked again before the unlinks


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
    mistudio: MiStudioPlan | None = None  # with --mistudio

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
    mistudio: MiStudioOutcome | None = None  # with --mistudio

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
class MiStudioOutcome:
    """What a run did to miStudio's ``checkpoints`` rows."""

    database: str
    rows_deleted: int = 0  # rows of files this run (or an earlier one) deleted
    rows_kept: int = 0  # rows of steps not every planned file of which went
    stale_deleted: int = 0  # --stale-records
    repaired: int = 0  # rows an interrupted earlier run left, deleted first
    error: str | None = None  # the database failed after some unlinks: rows left, reported


@dataclass(frozen=True, slots=True)
class MiStudioPending:
    """Rows an interrupted deletion meant to delete from miStudio after their files
    (reported by read-only commands; the next deleting run with --mistudio removes them)."""

    database: str
    rows: int
    steps: int
    since: float | None


@dataclass(frozen=True, slots=True)
class StaleTraining:
    """A miStudio training with rows under the root but no step folder left."""

    training_id: str
    status: str
    path: str  # where its folder would be
    stale_rows: int


@dataclass(frozen=True, slots=True)
class MiStudioSummary:
    """The miStudio picture of one root, for ``ls`` and ``scan``."""

    database: str
    matched: int  # trainings under the root that miStudio knows
    orphans: int  # step folders of those trainings with no row
    stale_rows: int  # rows whose file is gone (stale-only trainings included)
    stale_only: tuple[StaleTraining, ...] = ()
    ambiguous: tuple[tuple[str, tuple[str, ...]], ...] = ()  # id -> folders (not matched)
    unrecognised: int = 0  # rows whose storage_path is not under <id>/checkpoints/
    pending: MiStudioPending | None = None


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Rows an interrupted deletion claimed (``deleting``) and did not finish; reported by
    read-only commands, finished by the next deleting one."""

    files: int
    steps: int
    since: float | None  # when the first was claimed (epoch seconds)
    size_bytes: int
    first_steps: tuple[str, ...]  # up to 5 step paths, relative to their root
    running: bool = False  # another process holds the deletion lock: still being deleted


@dataclass(frozen=True, slots=True)
class FileBrief:
    """The least a face needs to mark files and sum their sizes without loading them all."""

    id: int
    step_id: int
    training_id: int
    size_bytes: int
    pinned: bool = False  # its step is pinned: never marked
    disk_bytes: int | None = None  # allocated bytes (None: not known)


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

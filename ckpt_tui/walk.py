"""Blocking filesystem walk that finds step directories and describes every file in them.

Runs in a worker thread; never follows a symlink; iterative, so a 2,000-deep chain of
directories cannot hit the recursion limit. Header reads are skipped for files whose
(inode, size, mtime_ns) match what the index already holds, and files whose
(inode, size, mtime_ns, nlink) and role match produce no row to write at all.

A step is recognised by its name and its content (``layout``): a folder whose name may be a
step is listed once, and that listing decides — ``checkpoint_<n>`` is a step unless it holds
other step folders, ``<n>``/``final_<n>`` only when it holds SAELens weights — and is then
reused, to list the step's files or to walk into the folder. Every file under a step gets a
role: an artifact its layout names, or foreign.

Performance notes (benchmarks/README.md has the numbers): directories are recognised from
``d_type`` (no stat); only files are stat'ed, each directory is listed once, which makes the
walk as fast as ``du -s``.
A first scan is bound by header validation (pure Python, GIL-held), so a thread pool for
header reads does not help on 2 cores; it is available as ``header_workers`` for hosts
where the filesystem, not the CPU, is slow (network filesystems).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ckpt_tui import layout
from ckpt_tui.fs import describe_oserror
from ckpt_tui.safetensors_header import HeaderError, read_header
from ckpt_tui.types import FileStatus

MAX_DEPTH = 64  # directories deeper than this below the root are not searched for steps
MAX_STORED_TENSORS = 256  # keep the index small for models with thousands of tensors
SAFETENSORS_SUFFIX = layout.SAFETENSORS_SUFFIX
ROLE_ARTIFACT = layout.ROLE_ARTIFACT
MAX_ROLE_CACHE = 1 << 16  # relpaths whose role is remembered per layout (then start over)
# Step problems found by the walk (stored in steps.problems, shown to users)
EMPTY = "empty"  # no file at all under the step folder
NO_ARTIFACTS = "no checkpoint files"  # only files its layout does not name


@dataclass(slots=True)
class ScannedFile:
    relpath: str
    layer: int | None
    hook: str | None
    size: int
    disk: int
    inode: int
    dev: int
    nlink: int
    mtime_ns: int
    status: str
    header: dict[str, Any] | None = None
    meta: dict[str, str] | None = None
    error: str | None = None
    header_read: bool = False  # the header was read in this scan
    header_reused: bool = False  # unchanged content: only stat facts (nlink) or role changed
    file_id: int | None = None  # the index row this file updates, if any
    path: str = ""  # absolute path, while a header read is pending
    role: str = "artifact"  # or "foreign": not a file the step's layout names (db ROLE_*)


RawFile = tuple[str, str | None, str, os.stat_result, int]
Entries = list[os.DirEntry[str]]
Listed = dict[str, Entries]  # entries of subfolders, by name, listed while recognising a step


@dataclass(slots=True)
class ScannedStep:
    training_relpath: str
    training_name: str
    step: int
    dirname: str
    relpath: str
    files: list[ScannedFile] = field(default_factory=list)  # new or changed: rows to write
    seen: list[int] = field(default_factory=list)  # ids of unchanged rows: nothing to write
    unit: str = "step"
    problems: list[str] = field(default_factory=list)  # found at scan time (missing shards, ...)
    config: dict[str, str] | None = None  # SAELens cfg.json summary
    layout: str = ""  # layout.LAYOUT_*: decides which files are artifacts
    # (relpath, first component, absolute path, lstat, size) of every file, until resolved
    raw: list[RawFile] = field(default_factory=list)


@dataclass(slots=True)
class WalkStats:
    dirs: int = 0
    files: int = 0
    bytes: int = 0
    steps: int = 0
    headers_read: int = 0
    headers_reused: int = 0
    notes: list[str] = field(default_factory=list)


def summarise_header(
    path: str, size: int
) -> tuple[str, dict[str, Any] | None, dict[str, str] | None, str | None]:
    """(status, header summary, metadata, error) for one safetensors file."""
    try:
        header = read_header(path, file_size=size)
    except HeaderError as err:
        return err.status, None, None, str(err)
    except OSError as err:
        return FileStatus.CORRUPT.value, None, None, f"cannot read header: {describe_oserror(err)}"
    tensors = [[t.name, t.dtype, list(t.shape)] for t in header.tensors[:MAX_STORED_TENSORS]]
    summary = {
        "header_len": header.header_len,
        "tensor_count": len(header.tensors),
        "parameter_count": header.parameter_count,
        "tensors": tensors,
    }
    return FileStatus.OK.value, summary, dict(header.metadata), None


def _display_name(name: str) -> str:
    """A name safe to store as text: undecodable bytes become U+FFFD in display only."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# (file id, inode, size, mtime_ns, nlink, role) of an index row; keyed by step relpath, file
# relpath. The role is compared too: it changes when a step's layout does (a layer appeared).
KnownRow = tuple[int, int, int, int, int, str]
KnownIndex = dict[str, dict[str, KnownRow]]

BATCH_FILES = 2000  # files per emitted batch of steps
BATCH_SECONDS = 0.5  # or sooner, so rows appear while a slow walk goes on


class Walker:
    """Walks one root (or one training below it) and emits batches of ScannedStep.

    Stat facts are gathered first; a step is then *resolved* against what the index holds:
    files whose (inode, size, mtime_ns, nlink, role) match are only marked seen, those whose
    content is unchanged get their stat facts and role refreshed, the rest a header read.
    (Loading the index while walking was measured slower on 2 cores than loading it first:
    the GIL-holding load convoys the walk's syscalls.)
    """

    def __init__(
        self,
        root: str,
        known: KnownIndex,
        emit: Callable[[list[ScannedStep]], None],
        tick: Callable[[WalkStats, str], None],
        cancelled: Callable[[], bool] = lambda: False,
        *,
        header_workers: int = 0,
        batch_files: int = BATCH_FILES,
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        self.root = root
        self.known = known
        self.emit = emit
        self.tick = tick
        self.cancelled = cancelled
        self.stats = WalkStats()
        self.header_workers = header_workers
        self.batch_files = batch_files
        self.batch_seconds = batch_seconds
        self._pool: ThreadPoolExecutor | None = None
        self._roles: dict[str, _Roles] = {}  # by layout
        self._out: list[ScannedStep] = []
        self._out_files = 0
        self._out_since = time.monotonic()

    def walk(self, start: tuple[str, ...] = (), *, descend: bool = True) -> WalkStats:
        """Walk from ``start`` (components below the root). With ``descend=False`` only the
        folders directly inside ``start`` are looked at (one training's steps)."""
        if self.header_workers > 1:
            self._pool = ThreadPoolExecutor(self.header_workers, thread_name_prefix="ckpt-hdr")
        try:
            self._walk(start, descend)
            self._flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        return self.stats

    def _list(self, path: str) -> Entries | None:
        """One directory's entries (a single scandir), or None with a note."""
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as err:
            self.stats.notes.append(f"skipped {path}: {describe_oserror(err)}")
            return None
        self.stats.dirs += 1
        return entries

    def _walk(self, start: tuple[str, ...], descend: bool) -> None:
        # (components, path, entries if already listed, listings of its children if any)
        stack: list[tuple[tuple[str, ...], str, Entries | None, Listed | None]] = [
            (start, os.path.join(self.root, *start), None, None)
        ]
        notes = self.stats.notes
        while stack and not self.cancelled():
            parts, path, entries, listed = stack.pop()
            if entries is None:
                entries = self._list(path)
                if entries is None:
                    continue
            entries.sort(key=_entry_name, reverse=True)
            training: tuple[str, str] | None = None  # (relpath, name), once per directory
            deeper = descend and len(parts) < MAX_DEPTH
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    if entry.is_symlink() and layout.parse_step_dir(entry.name) is not None:
                        notes.append(f"not followed: step directory {entry.path} is a symlink")
                    continue
                name = entry.name
                if not name.isascii() and _display_name(name) != name:
                    notes.append(f"skipped {entry.path!r}: name is not UTF-8")
                    continue
                found = layout.step_candidate(name)
                inner: Entries | None = None
                children: Listed | None = None
                if found is not None:  # a step by its name: its content decides
                    inner = listed.get(name) if listed else None
                    if inner is None:
                        inner = self._list(entry.path)
                        if inner is None:
                            continue
                    if found[1] == "step" or _holds_saelens_weights(inner):
                        if training is None:
                            training = (
                                layout.join_parts(parts),
                                layout.training_name(parts, self.root),
                            )
                        rel = f"{layout.join_parts(parts)}/{name}" if parts else name
                        scanned = ScannedStep(
                            training[0], training[1], found[0], name, rel, unit=found[1]
                        )
                        children = self._step(scanned, entry.path, inner)
                        if children is None:
                            continue  # a step, emitted
                    # not a step (no SAELens weights, or it holds step folders): walked into,
                    # with the listings already made
                if deeper:
                    stack.append(((*parts, name), entry.path, inner, children))
                elif descend:
                    notes.append(
                        f"not searched below {entry.path}: deeper than {MAX_DEPTH} directories"
                    )
            self.tick(self.stats, path)

    def _holds_steps(self, suspects: Entries) -> tuple[bool, Listed]:
        """Whether any of these subfolders of a candidate step (named like steps) is a step
        folder, and the listings read to tell: ``checkpoint_<n>`` is one by its name, a
        numeric folder only with SAELens weights."""
        listed: Listed = {}
        for e in suspects:
            if layout.parse_step_dir(e.name) is not None:
                return True, listed
            sub = self._list(e.path)
            if sub is None:
                continue
            listed[e.name] = sub
            if _holds_saelens_weights(sub):
                return True, listed
        return False, listed

    def _step(self, scanned: ScannedStep, step_path: str, entries: Entries) -> Listed | None:
        """Every file below a candidate step folder (its entries given): lstat facts (roles
        and headers come later). None once emitted; the listings made so far when its
        subfolders show it is not a step but a folder of steps (nothing emitted)."""
        stats = self.stats
        notes = stats.notes
        first_note = len(notes)
        raw = scanned.raw
        append = raw.append
        is_reg = stat.S_ISREG
        json_files = False
        has_layers = False
        suspects: Entries = []  # subfolders named like steps
        # (components inside the step, absolute path, entries if listed); joined with "/"
        stack: list[tuple[tuple[str, ...], str, Entries | None]] = [((), step_path, entries)]
        while stack:
            inner, path, listing = stack.pop()
            if listing is None:
                try:
                    with os.scandir(path) as it:
                        listing = list(it)
                except OSError as err:
                    notes.append(f"skipped {path}: {describe_oserror(err)}")
                    continue
                stats.dirs += 1
            prefix = "/".join(inner) + "/" if inner else ""
            top = inner[0] if inner else None
            for entry in listing:
                name = entry.name
                if not name.isascii() and _display_name(name) != name:
                    notes.append(f"skipped {entry.path!r}: name is not UTF-8")
                    continue
                try:
                    # d_type answers "directory?" without a syscall; files need the stat anyway
                    if entry.is_dir(follow_symlinks=False):
                        if not inner:  # the step's own subfolders say what it is
                            c = name[0]
                            if c == "l":
                                if not has_layers and layout.parse_layer_dir(name) is not None:
                                    has_layers = True
                            elif (c == "c" or c == "f" or c.isdigit()) and layout.step_candidate(
                                name
                            ) is not None:
                                suspects.append(entry)
                        if len(inner) < MAX_DEPTH:
                            stack.append(((*inner, name), entry.path, None))
                        else:
                            notes.append(
                                f"not listed: {entry.path} is deeper than "
                                f"{MAX_DEPTH} directories inside its step"
                            )
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError as err:
                    notes.append(f"skipped {entry.path}: {describe_oserror(err)}")
                    continue
                if stat.S_ISDIR(st.st_mode):  # d_type unknown on this filesystem
                    if len(inner) < MAX_DEPTH:
                        stack.append(((*inner, name), entry.path, None))
                    continue
                size = st.st_size if is_reg(st.st_mode) else 0
                stats.files += 1
                stats.bytes += size
                if name.endswith(".json"):
                    json_files = True
                append((prefix + name, top, entry.path, st, size))
            if not inner:  # the step's own entries are done: is it a step, and which layout
                if suspects:
                    top_notes = len(notes)
                    nested, peeked = self._holds_steps(suspects)
                    if nested:  # a folder of steps: undone, the walk goes into it (and notes
                        # what it finds there itself)
                        stats.files -= len(raw)
                        stats.bytes -= sum(r[4] for r in raw)
                        del notes[first_note:top_notes]
                        raw.clear()
                        return peeked
                    # a step after all: the subfolders listed to tell are not listed again
                    stack = [
                        (sub, at, peeked.get(sub[0]) if got is None else got)
                        for sub, at, got in stack
                    ]
                scanned.layout = layout.step_layout(scanned.dirname, has_layers)
        if json_files or scanned.unit == "samples":
            step_checks(scanned, step_path)
        stats.steps += 1
        self._resolve(scanned)
        return None

    def _resolve(self, scanned: ScannedStep) -> None:
        """Compare a step's files with the index; read headers of new or changed ones."""
        rows = self.known.get(scanned.relpath, _NO_ROWS)
        stats = self.stats
        to_read: list[ScannedFile] = []
        layers: dict[str | None, layout.LayerName | None] = {}
        kind = scanned.layout
        roles = self._roles.get(kind)  # role by relpath: the same names recur in every step
        if roles is None:
            roles = self._roles[kind] = _Roles(kind)
        for relpath, top, path, st, size in scanned.raw:
            role = roles[relpath]
            row = rows.get(relpath)
            is_st = relpath.endswith(SAFETENSORS_SUFFIX) and stat.S_ISREG(st.st_mode)
            same = (
                row is not None
                and row[1] == st.st_ino
                and row[2] == size
                and row[3] == st.st_mtime_ns
            )
            if same and is_st:
                stats.headers_reused += 1
            if same and row[4] == st.st_nlink and row[5] == role:  # type: ignore[index]
                scanned.seen.append(row[0])  # type: ignore[index]
                continue
            if top not in layers:
                layers[top] = layout.parse_layer_dir(top) if top is not None else None
            f = self._file(relpath, layers[top], st, size)
            f.role = role
            if row is not None:
                f.file_id = row[0]
            if same:
                f.header_reused = True  # only the link count or the role changed
            elif is_st:
                f.path = path
                to_read.append(f)
            scanned.files.append(f)
        if not scanned.raw:
            scanned.problems.insert(0, EMPTY)  # a bare mkdir, or debris of an older cleaner
        elif not any(roles[r[0]] == ROLE_ARTIFACT for r in scanned.raw):
            scanned.problems.insert(0, NO_ARTIFACTS)
        scanned.raw = []
        if to_read:
            self._read_headers(to_read)
        self._out.append(scanned)
        self._out_files += len(scanned.files) + len(scanned.seen)
        now = time.monotonic()
        if self._out_files >= self.batch_files or now - self._out_since >= self.batch_seconds:
            self._flush(now)

    def _read_headers(self, files: list[ScannedFile]) -> None:
        if self._pool is not None and len(files) > 1:
            results = self._pool.map(
                summarise_header, [f.path for f in files], [f.size for f in files]
            )
        else:
            results = (summarise_header(f.path, f.size) for f in files)
        for f, (status, header, meta, error) in zip(files, results, strict=True):
            f.status, f.header, f.meta, f.error = status, header, meta, error
            f.header_read = True
        self.stats.headers_read += len(files)

    def _flush(self, now: float | None = None) -> None:
        if self._out:
            out, self._out = self._out, []
            self.emit(out)
        self._out_files = 0
        self._out_since = time.monotonic() if now is None else now

    @staticmethod
    def _file(
        relpath: str, layer: layout.LayerName | None, st: os.stat_result, size: int
    ) -> ScannedFile:
        mode = st.st_mode
        is_reg = stat.S_ISREG(mode)
        if stat.S_ISLNK(mode):
            status = FileStatus.SYMLINK.value
        elif not is_reg:
            status = FileStatus.SPECIAL.value
        else:
            status = FileStatus.OTHER.value
        return ScannedFile(
            relpath=relpath,
            layer=layer.layer if layer else None,
            hook=layer.hook if layer else None,
            size=size,
            disk=st.st_blocks * 512 if is_reg else 0,
            inode=st.st_ino,
            dev=st.st_dev,
            nlink=st.st_nlink,
            mtime_ns=st.st_mtime_ns,
            status=status,
        )


_NO_ROWS: dict[str, KnownRow] = {}


class _Roles(dict[str, str]):
    """``layout.file_role`` of relpaths inside steps of one layout, remembered (the same
    names recur in every step); bounded: forgotten all at once when full."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def __missing__(self, relpath: str) -> str:
        if len(self) >= MAX_ROLE_CACHE:
            self.clear()
        role = self[relpath] = layout.file_role(self.kind, tuple(relpath.split("/")))
        return role


def _entry_name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _holds_saelens_weights(entries: Entries) -> bool:
    """Whether a folder's entries make it a SAELens step (weights directly inside)."""
    return layout.is_saelens_step({e.name for e in entries if e.is_file(follow_symlinks=False)})


SAE_WEIGHTS = layout.SAE_WEIGHTS
SHARD_INDEX_SUFFIX = ".safetensors.index.json"
MAX_SIDE_JSON = 16 * 1024 * 1024  # cfg.json and shard indexes are small; refuse giants
CFG_KEYS = ("model_name", "hook_name", "hook_point", "d_in", "d_sae", "architecture")


def _read_json(path: str) -> Any:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIDE_JSON:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return json.loads(f.read(MAX_SIDE_JSON))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)


def step_checks(scanned: ScannedStep, step_path: str) -> None:
    """Completeness checks a step can answer by itself: SAELens weights, sharded indexes."""
    names = {r[0] for r in scanned.raw}
    if scanned.unit == "samples":
        if SAE_WEIGHTS not in names:
            scanned.problems.append(f"no {SAE_WEIGHTS}")
        if "cfg.json" in names:
            cfg = _read_json(os.path.join(step_path, "cfg.json"))
            if isinstance(cfg, dict):
                scanned.config = {k: str(cfg[k]) for k in CFG_KEYS if k in cfg}
    for rel in sorted(n for n in names if n.endswith(SHARD_INDEX_SUFFIX)):
        index = _read_json(os.path.join(step_path, rel))
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            scanned.problems.append(f"{rel} is not a valid shard index")
            continue
        base = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
        shards = {str(v) for v in weight_map.values()}
        missing = sorted(s for s in shards if base + s not in names)
        for shard in missing:
            scanned.problems.append(f"missing shard {shard} (named in {rel})")

"""Blocking filesystem walk that finds step directories and describes every file in them.

Runs in a worker thread; never follows a symlink; iterative, so a 2,000-deep chain of
directories cannot hit the recursion limit. Header reads are skipped for files whose
(inode, size, mtime_ns) match what the index already holds.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ckpt_tui import layout
from ckpt_tui.fs import describe_oserror
from ckpt_tui.safetensors_header import HeaderError, read_header
from ckpt_tui.types import FileStatus

MAX_DEPTH = 64  # directories deeper than this below the root are not searched for steps
MAX_STORED_TENSORS = 256  # keep the index small for models with thousands of tensors
SAFETENSORS_SUFFIX = ".safetensors"


@dataclass(frozen=True, slots=True)
class Known:
    """What the index holds for a file, to skip re-reading unchanged headers."""

    inode: int
    size: int
    mtime_ns: int
    status: str
    header: dict[str, Any] | None
    meta: dict[str, str] | None
    error: str | None


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
    header_read: bool = False


@dataclass(slots=True)
class ScannedStep:
    training_relpath: str
    training_name: str
    step: int
    dirname: str
    relpath: str
    files: list[ScannedFile] = field(default_factory=list)
    unit: str = "step"
    problems: list[str] = field(default_factory=list)  # found at scan time (missing shards, ...)
    config: dict[str, str] | None = None  # SAELens cfg.json summary


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


class Walker:
    """Walks one root (or one training below it) and emits a ScannedStep per step directory."""

    def __init__(
        self,
        root: str,
        known: dict[tuple[str, str], Known],
        emit: Callable[[ScannedStep], None],
        tick: Callable[[WalkStats, str], None],
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.root = root
        self.known = known
        self.emit = emit
        self.tick = tick
        self.cancelled = cancelled
        self.stats = WalkStats()

    def walk(self, start: tuple[str, ...] = ()) -> WalkStats:
        stack: list[tuple[str, ...]] = [start]
        while stack and not self.cancelled():
            parts = stack.pop()
            path = os.path.join(self.root, *parts)
            try:
                entries = sorted(os.scandir(path), key=lambda e: e.name, reverse=True)
            except OSError as err:
                self.stats.notes.append(f"skipped {path}: {describe_oserror(err)}")
                continue
            self.stats.dirs += 1
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if _display_name(entry.name) != entry.name:
                    self.stats.notes.append(f"skipped {entry.path!r}: name is not UTF-8")
                    continue
                found = layout.step_for_dir(parts, entry.name)
                if found is not None:
                    self._step(parts, entry.name, *found)
                elif len(parts) < MAX_DEPTH:
                    stack.append((*parts, entry.name))
                else:
                    self.stats.notes.append(
                        f"not searched below {entry.path}: deeper than {MAX_DEPTH} directories"
                    )
            self.tick(self.stats, path)
        return self.stats

    def _step(self, parent: tuple[str, ...], dirname: str, step: int, unit: str) -> None:
        training = layout.training_dir_for(parent)
        training_name = training[-1] if training else os.path.basename(self.root)
        rel = layout.join_parts((*parent, dirname))
        scanned = ScannedStep(
            layout.join_parts(training), training_name, step, dirname, rel, unit=unit
        )
        stack: list[tuple[str, ...]] = [()]
        step_path = os.path.join(self.root, *parent, dirname)
        while stack:
            inner = stack.pop()
            path = os.path.join(step_path, *inner)
            try:
                entries = list(os.scandir(path))
            except OSError as err:
                self.stats.notes.append(f"skipped {path}: {describe_oserror(err)}")
                continue
            self.stats.dirs += 1
            for entry in entries:
                if _display_name(entry.name) != entry.name:
                    self.stats.notes.append(f"skipped {entry.path!r}: name is not UTF-8")
                    continue
                parts = (*inner, entry.name)
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as err:
                    self.stats.notes.append(f"skipped {entry.path}: {describe_oserror(err)}")
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if len(inner) < MAX_DEPTH:
                        stack.append(parts)
                    continue
                scanned.files.append(self._file(rel, parts, entry.path, st))
        step_checks(scanned, step_path)
        self.stats.steps += 1
        self.emit(scanned)

    def _file(
        self, step_rel: str, parts: tuple[str, ...], path: str, st: os.stat_result
    ) -> ScannedFile:
        relpath = layout.join_parts(parts)
        layer = layout.file_layer(parts)
        is_reg = stat.S_ISREG(st.st_mode)
        size = st.st_size if is_reg else 0
        f = ScannedFile(
            relpath=relpath,
            layer=layer.layer if layer else None,
            hook=layer.hook if layer else None,
            size=size,
            disk=st.st_blocks * 512 if is_reg else 0,
            inode=st.st_ino,
            dev=st.st_dev,
            nlink=st.st_nlink,
            mtime_ns=st.st_mtime_ns,
            status=FileStatus.OTHER.value,
        )
        self.stats.files += 1
        self.stats.bytes += size
        if stat.S_ISLNK(st.st_mode):
            f.status = FileStatus.SYMLINK.value
        elif not is_reg:
            f.status = FileStatus.SPECIAL.value
        elif parts[-1].endswith(SAFETENSORS_SUFFIX):
            known = self.known.get((step_rel, relpath))
            if known and (known.inode, known.size, known.mtime_ns) == (
                st.st_ino,
                size,
                st.st_mtime_ns,
            ):
                f.status, f.header, f.meta, f.error = (
                    known.status,
                    known.header,
                    known.meta,
                    known.error,
                )
                self.stats.headers_reused += 1
            else:
                f.status, f.header, f.meta, f.error = summarise_header(path, size)
                f.header_read = True
                self.stats.headers_read += 1
        return f


SAE_WEIGHTS = "sae_weights.safetensors"
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
    names = {f.relpath for f in scanned.files}
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

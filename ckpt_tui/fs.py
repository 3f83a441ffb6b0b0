"""Safe filesystem primitives: dir-fd based, never following a symlink, never leaving the root.

Every path used here arrives as components already validated by ``layout``; each directory is
opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's fd, and every unlink and rmdir
names one entry relative to an fd, so a directory swapped for a symlink after validation can
never redirect a deletion elsewhere.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ckpt_tui import layout
from ckpt_tui.errors import RootError
from ckpt_tui.types import DiskUsage, Outcome, PlannedFile

log = logging.getLogger(__name__)

MAX_SWEEP_DEPTH = 16  # empty folders below a step are looked for this deep
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Errors after which continuing would only repeat the failure: stop the batch, resumable.
STOP_ERRNOS = frozenset({errno.EROFS, errno.EIO, errno.ENOSPC, errno.EDQUOT})


class StopBatch(Exception):
    """The filesystem refuses all further work (read-only, I/O error)."""

    def __init__(self, path: str, err: OSError) -> None:
        super().__init__(f"{path}: {err.strerror or err}")
        self.path = path
        self.err = err


@dataclass(frozen=True, slots=True)
class RootHandle:
    path: str
    dev: int
    ino: int


def describe_oserror(err: OSError) -> str:
    name = errno.errorcode.get(err.errno or 0, "")
    text = err.strerror or str(err)
    return f"{text} ({name})" if name else text


def check_root(path: str) -> RootHandle:
    """Validate a root: an existing directory, not a symlink, not ``/``; one-line errors."""
    if not path:
        raise RootError("root path is empty")
    absolute = os.path.abspath(os.path.expanduser(path))
    try:
        st = os.lstat(absolute)
    except FileNotFoundError:
        raise RootError(f"root {absolute} does not exist") from None
    except OSError as err:
        raise RootError(f"root {absolute} cannot be read: {describe_oserror(err)}") from None
    if stat.S_ISLNK(st.st_mode):
        raise RootError(f"root {absolute} is a symlink; pass the directory it points to")
    if not stat.S_ISDIR(st.st_mode):
        raise RootError(f"root {absolute} is not a directory")
    slash = os.stat("/")
    if (st.st_dev, st.st_ino) == (slash.st_dev, slash.st_ino):
        raise RootError("refusing to use / as a root")
    try:
        fd = os.open(absolute, DIR_FLAGS)
    except OSError as err:
        raise RootError(f"root {absolute} cannot be opened: {describe_oserror(err)}") from None
    os.close(fd)
    return RootHandle(os.path.realpath(absolute), st.st_dev, st.st_ino)


@contextmanager
def open_root(root: RootHandle) -> Iterator[int]:
    """An fd on the root, verified to be the same directory that was scanned."""
    fd = os.open(root.path, DIR_FLAGS)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (root.dev, root.ino):
            raise RootError(f"root {root.path} was replaced since it was indexed")
        yield fd
    finally:
        os.close(fd)


def open_dir_at(parent_fd: int, name: str, dev: int) -> int:
    """Open one child directory without following symlinks and without crossing mounts."""
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    if os.fstat(fd).st_dev != dev:
        os.close(fd)
        raise OSError(errno.EXDEV, "is a mount point inside the root, refused", name)
    return fd


def disk_usage(path: str) -> DiskUsage:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return DiskUsage(total=total, used=total - st.f_bfree * st.f_frsize, free=free)


@dataclass
class FileOutcome:
    file: PlannedFile
    outcome: Outcome
    freed_bytes: int = 0
    error: str | None = None
    freed_disk_bytes: int = 0


@dataclass
class StepDeletion:
    """Deletes planned files of one step through fds, then collapses emptied directories."""

    root_fd: int
    root: RootHandle
    step_parts: tuple[str, ...]
    _fds: dict[tuple[str, ...], int] = field(default_factory=dict)
    _touched: set[tuple[str, ...]] = field(default_factory=set)
    # fds of directories above the step (training, checkpoints/), shared by the steps of a
    # run so each is opened once; owned and closed by the caller.
    ancestors: dict[tuple[str, ...], int] = field(default_factory=dict)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _dir(self, parts: tuple[str, ...]) -> int:
        """fd of a directory given components from the root, opened one level at a time."""
        if not parts:
            return self.root_fd
        cache = self.ancestors if len(parts) < len(self.step_parts) else self._fds
        fd = cache.get(parts)
        if fd is None:
            fd = open_dir_at(self._dir(parts[:-1]), parts[-1], self.root.dev)
            cache[parts] = fd
        return fd

    def _path(self, parts: tuple[str, ...]) -> str:
        return os.path.join(self.root.path, *parts)

    def delete_file(self, planned: PlannedFile) -> FileOutcome:
        parts = planned.relparts
        parent = parts[:-1]
        try:
            dir_fd = self._dir(parent)
            st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            self._touched.add(parent)  # a crash may have left its emptied directory behind
            return FileOutcome(planned, Outcome.ALREADY_GONE)
        except OSError as err:
            if err.errno in STOP_ERRNOS:
                raise StopBatch(self._path(parts), err) from err
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                return FileOutcome(
                    planned,
                    Outcome.FAILED,
                    error="a directory on its path is now a symlink or not a directory; refused",
                )
            return FileOutcome(planned, Outcome.FAILED, error=describe_oserror(err))
        expect_type = stat.S_ISLNK if planned.is_symlink else stat.S_ISREG
        if not expect_type(st.st_mode):
            return FileOutcome(
                planned, Outcome.CHANGED, error="changed type since the scan; left alone"
            )
        size = 0 if planned.is_symlink else st.st_size
        if (st.st_ino, size, st.st_mtime_ns) != (
            planned.inode,
            planned.size_bytes,
            planned.mtime_ns,
        ):
            return FileOutcome(planned, Outcome.CHANGED, error="changed since the scan; left alone")
        last = st.st_nlink <= 1 and not planned.is_symlink
        freed = size if last else 0
        freed_disk = st.st_blocks * 512 if last else 0
        try:
            os.unlink(parts[-1], dir_fd=dir_fd)
        except FileNotFoundError:
            self._touched.add(parent)
            return FileOutcome(planned, Outcome.ALREADY_GONE)
        except OSError as err:
            if err.errno in STOP_ERRNOS:
                raise StopBatch(self._path(parts), err) from err
            return FileOutcome(planned, Outcome.FAILED, error=describe_oserror(err))
        if log.isEnabledFor(logging.INFO):  # the path is built only when it will be logged
            log.info("deleted file %s (%d bytes)", self._path(parts), st.st_size)
        self._touched.add(parent)
        return FileOutcome(planned, Outcome.DELETED, freed_bytes=freed, freed_disk_bytes=freed_disk)

    def sweep(self, *, any_name: bool) -> None:
        """Mark folders below the step, and the step itself, as collapse candidates: for a
        step planned whole, folders that were already empty (an older cleaner's debris, a
        bare ``mkdir``) go too. ``any_name`` (a step that had no files at all) takes every
        folder; otherwise only ``layer_*`` folders, so a folder that appeared since the scan
        is left alone. Listing only: ``collapse`` removes nothing that is not empty."""
        stack = [self.step_parts]
        while stack:
            parts = stack.pop()
            self._touched.add(parts)
            if len(parts) - len(self.step_parts) >= MAX_SWEEP_DEPTH:
                continue
            try:
                fd = self._dir(parts)
                with os.scandir(fd) as it:
                    subdirs = [
                        e.name
                        for e in it
                        if e.is_dir(follow_symlinks=False)
                        and (any_name or layout.parse_layer_dir(e.name) is not None)
                    ]
            except OSError as err:
                if err.errno in STOP_ERRNOS:
                    raise StopBatch(self._path(parts), err) from err
                continue  # gone, a symlink now, unreadable: collapse decides with rmdir
            stack += [(*parts, name) for name in subdirs]

    def collapse(self, *, quiet: bool = False) -> list[str]:
        """rmdir-if-empty every emptied directory, deepest first, up to the step directory.

        Never above the step directory; ENOTEMPTY (a file we did not plan) stops quietly.
        ``quiet``: best effort after a StopBatch, a filesystem-wide error ends it silently.
        """
        removed: list[str] = []
        step_len = len(self.step_parts)
        candidates: set[tuple[str, ...]] = set()
        for parts in self._touched:
            while len(parts) >= step_len and parts[:step_len] == self.step_parts:
                candidates.add(parts)
                parts = parts[:-1]
        gone: set[tuple[str, ...]] = set()
        for parts in sorted(candidates, key=len, reverse=True):
            if any(c[: len(parts)] == parts and c != parts and c not in gone for c in candidates):
                continue  # a child directory stayed, so this one is not empty
            fd = self._fds.pop(parts, None)
            if fd is not None:
                os.close(fd)
            try:
                os.rmdir(parts[-1], dir_fd=self._dir(parts[:-1]))
            except OSError as err:
                if err.errno in STOP_ERRNOS:
                    if quiet:
                        break
                    raise StopBatch(self._path(parts), err) from err
                if err.errno == errno.ENOENT:
                    gone.add(parts)  # already removed (e.g. by a run that was interrupted)
                elif err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
                    log.warning(
                        "cannot remove directory %s: %s", self._path(parts), describe_oserror(err)
                    )
                continue
            gone.add(parts)
            path = self._path(parts)
            kind = "step" if len(parts) == step_len else "layer"
            log.info("deleted empty %s directory %s", kind, path)
            removed.append(path)
        self._touched.clear()
        return removed


@contextmanager
def _closing(fds: dict[tuple[str, ...], int]) -> Iterator[None]:
    try:
        yield
    finally:
        for fd in fds.values():
            os.close(fd)
        fds.clear()


def delete_steps(
    root: RootHandle,
    work: list[tuple[tuple[str, ...], list[PlannedFile], bool]],
    on_file: Callable[[FileOutcome], None],
    on_dirs: Callable[[tuple[str, ...], list[str]], None],
    should_stop: Callable[[], bool],
) -> None:
    """Blocking: delete each step's files, then collapse its directories. Runs in a thread.

    ``work`` holds (step components, files, whole): a step planned whole also loses the
    folders that were empty before. Raises StopBatch on a filesystem-wide failure; stops
    between files when ``should_stop``.
    """
    ancestors: dict[tuple[str, ...], int] = {}
    with open_root(root) as root_fd, _closing(ancestors):
        for step_parts, files, whole in work:
            deletion = StepDeletion(root_fd, root, step_parts, ancestors=ancestors)
            try:
                try:
                    stopped = False
                    for planned in files:
                        if should_stop():
                            stopped = True
                            break
                        on_file(deletion.delete_file(planned))
                    if whole and not stopped:
                        deletion.sweep(any_name=not files)
                except StopBatch:
                    # Do not leave the directories emptied so far behind: a re-run would not
                    # revisit them, as their files' rows are gone.
                    on_dirs(step_parts, deletion.collapse(quiet=True))
                    raise
                on_dirs(step_parts, deletion.collapse())
            finally:
                deletion.close()
            if should_stop():
                return


def remove_empty_dirs(root: RootHandle, dirs: list[tuple[str, ...]]) -> list[str]:
    """rmdir-if-empty each folder (components from the root), in the order given (deepest
    first): the folders above the steps of a training deleted whole. Never the root, never a
    non-empty folder (ENOTEMPTY ends that folder quietly: a log, a foreign file keeps it)."""
    removed: list[str] = []
    with open_root(root) as root_fd:
        for parts in dirs:
            if not parts:
                continue  # the root itself is never removed
            opened: list[int] = []
            try:
                parent = root_fd
                for name in parts[:-1]:
                    parent = open_dir_at(parent, name, root.dev)
                    opened.append(parent)
                os.rmdir(parts[-1], dir_fd=parent)
            except OSError as err:
                if err.errno in STOP_ERRNOS:
                    raise StopBatch(os.path.join(root.path, *parts), err) from err
                continue
            finally:
                for fd in reversed(opened):
                    os.close(fd)
            path = os.path.join(root.path, *parts)
            log.info("deleted emptied training directory %s", path)
            removed.append(path)
    return removed


MAX_LISTED = 1000  # files listed in one step folder after a run (a report, not a walk)


def list_files(root: RootHandle, step_parts: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Components (from the root) of the non-directory entries left in a step folder, found
    through dir fds without following symlinks; empty when the folder is gone. Bounded."""
    out: list[tuple[str, ...]] = []
    try:
        with open_root(root) as root_fd:
            opened: list[int] = []
            try:
                fd = root_fd
                for name in step_parts:
                    fd = open_dir_at(fd, name, root.dev)
                    opened.append(fd)
                stack: list[tuple[int, tuple[str, ...]]] = [(fd, step_parts)]
                while stack and len(out) < MAX_LISTED:
                    dfd, parts = stack.pop()
                    with os.scandir(dfd) as it:
                        entries = list(it)
                    for e in entries:
                        if e.is_dir(follow_symlinks=False):
                            if len(parts) - len(step_parts) < MAX_SWEEP_DEPTH:
                                child = open_dir_at(dfd, e.name, root.dev)
                                opened.append(child)
                                stack.append((child, (*parts, e.name)))
                        else:
                            out.append((*parts, e.name))
            finally:
                for o in reversed(opened):
                    os.close(o)
    except OSError:
        return out  # gone or unreadable: nothing more to report
    return out

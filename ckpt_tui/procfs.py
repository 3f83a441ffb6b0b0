"""Which files other processes hold open, read from /proc (Linux); empty elsewhere."""

from __future__ import annotations

import os

PROC = "/proc"


def open_files(proc: str = PROC) -> dict[tuple[int, int], str]:
    """(st_dev, st_ino) of every regular file open in another process -> 'pid N (name)'."""
    found: dict[tuple[int, int], str] = {}
    me = os.getpid()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit() and int(p) != me]
    except OSError:
        return found
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if (st.st_mode & 0o170000) == 0o100000:
                found.setdefault((st.st_dev, st.st_ino), f"process {pid} ({_comm(proc, pid)})")
    return found


def holder(busy: dict[tuple[int, int], str], dev: int, ino: int, path: str) -> str | None:
    """Who holds the file at ``path`` (scanned as ``(dev, ino)``) open, or None.

    An inode number names a file only while that file exists: once a file is unlinked, its
    number is free for the next file created on that filesystem (another program's database,
    a log). So a hit in ``busy`` counts only while ``path`` still names that inode; a file gone
    or replaced since the scan is not "open" (its unlink reports it gone or changed)."""
    who = busy.get((dev, ino))
    if who is None:
        return None
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return who  # cannot tell: keep the protection
    return who if (st.st_dev, st.st_ino) == (dev, ino) else None


def _comm(proc: str, pid: str) -> str:
    try:
        with open(os.path.join(proc, pid, "comm"), encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"

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


def _comm(proc: str, pid: str) -> str:
    try:
        with open(os.path.join(proc, pid, "comm"), encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"

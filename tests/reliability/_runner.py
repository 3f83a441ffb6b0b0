"""Run the real ``ckpt-tui`` CLI with fault hooks taken from the environment.

Used by reliability tests that need a real process (exit code, stderr, locks, signals) and
also an OS call to misbehave or be observed:

- ``CKPT_FAULT_UNLINK_SLEEP=S``: sleep S seconds before each unlink (a slow disk).
- ``CKPT_FAULT_UNLINK_LOG=FILE``: append the full path of every successful unlink to FILE.
- ``CKPT_FAULT_UNLINK_ERRNO=SUBSTR:ERRNO``: unlinks whose full path contains SUBSTR raise
  ``OSError(ERRNO)`` (root ignores permission bits, so EACCES etc. are produced this way).
- ``CKPT_FAULT_UNLINK_GATE=DIR[:N]``: a handshake instead of a sleep. Right before the N-th
  unlink (default 1) the process creates ``DIR/holding`` and waits until ``DIR/release``
  exists (at most ``CKPT_FAULT_GATE_TIMEOUT`` seconds, default 120, then exits 99), so a
  test can act while this process is known to be mid-deletion, holding its locks, for as
  long as it needs.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from typing import Any

_real_unlink = os.unlink
_unlinks = [0]


def _gate() -> None:
    spec = os.environ.get("CKPT_FAULT_UNLINK_GATE")
    if not spec:
        return
    gate_dir, _, nth = spec.partition(":")
    _unlinks[0] += 1
    if _unlinks[0] != int(nth or 1):
        return
    with open(os.path.join(gate_dir, "holding"), "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + float(os.environ.get("CKPT_FAULT_GATE_TIMEOUT", "120"))
    release = os.path.join(gate_dir, "release")
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            os._exit(99)  # the test never released us: fail loudly, do not hang CI
        time.sleep(0.005)  # polling a file the test creates, with a deadline


def _full(path: Any, dir_fd: int | None) -> str:
    name = os.fsdecode(path)
    if dir_fd is None:
        return os.path.abspath(name)
    return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)


def _unlink(path: Any, *, dir_fd: int | None = None) -> None:
    full = _full(path, dir_fd)
    _gate()
    sleep = float(os.environ.get("CKPT_FAULT_UNLINK_SLEEP", "0") or 0)
    if sleep:
        time.sleep(sleep)
    fault = os.environ.get("CKPT_FAULT_UNLINK_ERRNO")
    if fault:
        needle, _, code = fault.rpartition(":")
        if needle in full:
            num = getattr(errno, code) if not code.isdigit() else int(code)
            raise OSError(num, os.strerror(num), os.path.basename(full))
    _real_unlink(path, dir_fd=dir_fd)
    log = os.environ.get("CKPT_FAULT_UNLINK_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {full}\n")


os.unlink = _unlink

if __name__ == "__main__":
    from ckpt_tui.cli import main

    sys.argv[0] = "ckpt-tui"
    main()

"""Errors a user can cause; the CLI prints ``str(err)`` as one line, the TUI notifies it."""

from __future__ import annotations


class CkptError(Exception):
    """Base class: a problem with a clear one-line explanation, never a traceback."""


class RootError(CkptError):
    """The root is missing, not a directory, a symlink, or ``/``."""


class IndexError_(CkptError):
    """The index database cannot be used (corrupt, unknown schema, unreachable)."""


class IndexBusy(CkptError):
    """Another process holds the deletion lock or the database is locked."""


class UnsafeRecord(CkptError):
    """An index row points outside the root, through ``..`` or a symlink, or is malformed."""


class TargetError(CkptError):
    """A CLI target is not a step directory or file under the root, or is not indexed."""

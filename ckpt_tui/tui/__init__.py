"""The Textual face. Only this package imports textual."""

from __future__ import annotations


def run_tui(root: str, db: str | None, *, read_only: bool = False) -> int:
    """Open the browser on ``root`` with the index ``db``; returns the exit code."""
    from ckpt_tui.tui.app import CkptApp

    app = CkptApp(root, db, read_only=read_only)
    code = app.run()
    return int(code or app.return_code or 0)

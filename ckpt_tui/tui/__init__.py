"""The Textual face. Only this package imports textual."""

from __future__ import annotations


def run_tui(root: str, db: str | None, *, read_only: bool = False, si: bool = False) -> int:
    """Open the browser on ``root`` with the index ``db``; returns the exit code.

    A demo tree this process built in a temporary directory (``ckpt-tui --demo``) is removed
    when the app exits, however it exits."""
    from ckpt_tui import demo
    from ckpt_tui.tui.app import CkptApp

    try:
        app = CkptApp(root, db, read_only=read_only, si=si)
        code = app.run()
        return int(code or app.return_code or 0)
    finally:
        demo.remove_if_temporary(root)

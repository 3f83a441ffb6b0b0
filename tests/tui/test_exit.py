"""Quitting while the browser is still opening: no traceback, no hang.

The start-up worker keeps querying the index after the first rows show (interrupted
deletions, the file map). Leaving at that moment used to fail in two ways, both seen in the
TUI benchmark: the worker touched the tree after its screen was gone (``NoMatches`` raised
out of ``run_test``), or the index was closed under a worker mid-query and the exit waited
forever for the driver's thread.
"""

from __future__ import annotations

import asyncio

from ckpt_tui.demo import DemoTree
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.app import CkptApp


async def _open_and_leave(demo: DemoTree) -> CkptApp:
    app = CkptApp(str(demo.root), str(demo.db_path))  # owns its service, as `ckpt-tui ROOT`
    async with app.run_test(size=(80, 24)):
        # leave the moment the rows are in: the start-up worker is still querying
        await asyncio.wait_for(app.marks_ready.wait(), timeout=30)
        assert len(app.model.rows) > 1
    return app


async def test_leaving_while_the_browser_is_still_opening_neither_hangs_nor_fails(
    demo: DemoTree, service: CheckpointService
) -> None:
    """The index is scanned already (``service``), so start-up only reads it."""
    for _ in range(3):  # the start-up worker is mid-query at a slightly different point each time
        app = await asyncio.wait_for(_open_and_leave(demo), timeout=60)
        assert app.return_code in (None, 0)
        assert all(w.is_finished for w in app.workers), "a worker outlived the app"
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert not [t for t in left if "ckpt_tui" in repr(t.get_coro())], left

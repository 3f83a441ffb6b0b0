"""The Textual face. Only this package imports textual."""

from __future__ import annotations


def run_tui(root: str, db: str | None, *, read_only: bool = False) -> int:
    """Placeholder until the TUI lands: print the listing instead."""
    import asyncio

    from ckpt_tui.clifmt import print_tree
    from ckpt_tui.service import CheckpointService

    async def go() -> int:
        async with await CheckpointService.open(db) as svc:
            await svc.scan(root)
            info = await svc.get_root(root)
            assert info is not None
            print_tree(info.path, await svc.tree(info.id))
        return 0

    return asyncio.run(go())

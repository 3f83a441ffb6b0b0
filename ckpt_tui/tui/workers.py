"""Start database coroutines in plain async workers (never ``thread=True``: one event loop)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from textual.dom import DOMNode


def spawn(
    owner: DOMNode,
    fn: Callable[..., Coroutine[Any, Any, None]],
    *args: Any,
    group: str,
    exclusive: bool = False,
) -> None:
    """Run ``fn(*args)`` as a named worker; the coroutine is only created when it starts,
    so an exclusive worker replaced before it ran leaves no never-awaited coroutine behind."""

    async def run() -> None:
        await fn(*args)

    owner.run_worker(run, group=group, exclusive=exclusive)  # type: ignore[arg-type]

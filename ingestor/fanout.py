"""Work over many streams with a bounded number in flight (the startup's per-stream requests).

Each stream's own steps stay in order inside ``fn``; only different streams overlap, so a
restart of thousands of streams waits for ``limit`` round trips at a time instead of one (the
REST requests are also held under the weight budget by the client's pacer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["fan_out"]


async def fan_out[T](items: Iterable[T], fn: Callable[[T], Awaitable[None]], limit: int) -> None:
    """``await fn(item)`` for every item, at most ``limit`` at once, started in ``items``'
    order; the first failure cancels the rest and is raised (in an ``ExceptionGroup`` only
    when several failed together)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    todo = iter(items)

    async def worker() -> None:
        for item in todo:  # one shared iterator: each item goes to exactly one worker
            await fn(item)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(limit):
                tg.create_task(worker())
    except ExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise

"""Work over many streams with a bounded number in flight (the startup's per-stream requests).

Each stream's own steps stay in order inside ``fn``; only different streams overlap, so a
restart of thousands of streams waits for ``limit`` round trips at a time instead of one (the
REST requests are also held under the weight budget by the client's pacer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["fan_out"]

#: Seconds between two progress reports.
PROGRESS_EVERY_S = 10.0


async def fan_out[T](
    items: Iterable[T],
    fn: Callable[[T], Awaitable[None]],
    limit: int,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """``await fn(item)`` for every item, at most ``limit`` at once, started in ``items``'
    order; the first failure cancels the rest and is raised (in an ``ExceptionGroup`` only
    when several failed together). ``progress(done)`` is called at most every
    ``PROGRESS_EVERY_S`` with the number of items done (long work says how far it is)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    todo = iter(items)
    done = 0
    reported = clock()

    async def worker() -> None:
        nonlocal done, reported
        for item in todo:  # one shared iterator: each item goes to exactly one worker
            await fn(item)
            done += 1
            if progress is not None and clock() - reported >= PROGRESS_EVERY_S:
                reported = clock()
                progress(done)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(limit):
                tg.create_task(worker())
    except ExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise

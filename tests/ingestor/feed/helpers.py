"""What the feed connection tests share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ingestor.feed.connection import FeedConnection

__all__ = ["running"]


@contextlib.asynccontextmanager
async def running(conn: FeedConnection) -> AsyncIterator[FeedConnection]:
    """``conn.run()`` as a task for the block's duration; cancelled and awaited on exit."""
    task = asyncio.create_task(conn.run())
    try:
        yield conn
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""Connection-attempt budget shared by every feed connection.

Binance allows 300 connection attempts per 5 minutes per IP; a sliding window keeps every
connection of the process under it (the backoff between attempts is ``ingestor.retry``'s).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["AttemptBudget"]


class AttemptBudget:
    """At most ``max_attempts`` connection attempts per ``window_s`` seconds."""

    def __init__(self, max_attempts: int = 300, window_s: float = 300.0) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._stamps and now - self._stamps[0] >= self.window_s:
                    self._stamps.popleft()
                if len(self._stamps) < self.max_attempts:
                    self._stamps.append(now)
                    return
                await asyncio.sleep(self.window_s - (now - self._stamps[0]))

"""Connection-attempt budget and backoff shared by every feed connection.

Binance allows 300 connection attempts per 5 minutes per IP; a sliding window keeps every
connection of the process under it, and full-jitter backoff spreads reconnects out so that
twenty connections dropped at once do not come back in the same instant.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque

__all__ = ["AttemptBudget", "Backoff"]


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


class Backoff:
    """Exponential backoff with full jitter and a cap; ``reset`` after a healthy connection."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** min(self.failures, 16)))

    def reset(self) -> None:
        self.failures = 0

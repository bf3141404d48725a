"""A request-weight budget: stay under a share of the exchange's per-minute weight limit.

Binance counts request weight per IP per minute and reports it in ``X-MBX-USED-WEIGHT-1M`` on
every response; going over earns 429s and, if ignored, a 418 ban. :class:`WeightPacer` admits a
request only when its weight fits under ``budget`` given

* the weight of this process's requests still in flight (not yet counted by the server, maybe),
* the weight of its completed requests in the last ``window_s`` (each kept until ``window_s``
  after its *response*, so it has surely left the server's window too), and
* everyone else's weight on the same IP (e.g. a live daemon): the last header value minus what
  we know of ours, kept for a window after it was seen.

A sliding window is never looser than Binance's fixed minute, so the header never passes the
budget. Waiting is event driven: a completion or the oldest entry's expiry wakes the waiters.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

__all__ = ["BINANCE_WEIGHT_LIMIT_1M", "KLINES_WEIGHT", "WeightPacer", "share_of"]

#: Binance spot's ``REQUEST_WEIGHT`` limit per minute (``exchangeInfo`` ``rateLimits``).
BINANCE_WEIGHT_LIMIT_1M = 6000
#: ``GET /api/v3/klines`` costs 2 on spot, whatever the limit.
KLINES_WEIGHT = 2


def share_of(limit: int, share: float) -> int:
    """The budget that is ``share`` of the exchange's per-minute ``limit`` (at least one
    klines request's weight)."""
    return max(KLINES_WEIGHT, int(limit * share))


class WeightPacer:
    """``await pacer.acquire(weight)`` before a request, ``await pacer.release(weight, header)``
    after it, with its response's ``X-MBX-USED-WEIGHT-1M``. ``budget`` = limit x share."""

    def __init__(
        self,
        budget: int,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = _checked(budget)
        self.window_s = window_s
        self._clock = clock
        self._done: deque[tuple[float, int]] = deque()  # (expires at, weight), in expiry order
        self._done_sum = 0
        self._inflight = 0
        self._external = 0  # others' weight seen in the last header
        self._external_until = 0.0
        self._changed = asyncio.Condition()
        self.requests = 0
        self.weight_sent = 0
        self.max_header = 0  # highest X-MBX-USED-WEIGHT-1M seen
        self.waited_s = 0.0

    def resize(self, budget: int) -> None:
        """A new budget (the exchange advertised another limit); waiters see it at the next
        completion or expiry."""
        self.budget = _checked(budget)

    def used(self) -> int:
        """Our estimate of the weight the server counts in its current window."""
        now = self._clock()
        while self._done and self._done[0][0] <= now:
            self._done_sum -= self._done.popleft()[1]
        if now >= self._external_until:
            self._external = 0
        return self._inflight + self._done_sum + self._external

    def _next_expiry(self) -> float | None:
        times = [t for t in (self._done[0][0] if self._done else None,) if t is not None]
        if self._external:
            times.append(self._external_until)
        return min(times) - self._clock() if times else None

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` more fits under the budget, then count it as in flight (a
        request heavier than the whole budget waits for an empty window)."""
        t0 = self._clock()
        async with self._changed:
            while self.used() + min(weight, self.budget) > self.budget:
                timeout = self._next_expiry()
                try:
                    async with asyncio.timeout(None if timeout is None else max(timeout, 0.001)):
                        await self._changed.wait()
                except TimeoutError:
                    pass
            self._inflight += weight
        self.requests += 1
        self.weight_sent += weight
        self.waited_s += self._clock() - t0

    async def release(self, weight: int, header: int | None) -> None:
        """The request of ``weight`` got its response; ``header``: its used-weight value."""
        now = self._clock()
        async with self._changed:
            self._inflight -= weight
            self._done.append((now + self.window_s, weight))
            self._done_sum += weight
            if header is not None:
                self.max_header = max(self.max_header, header)
                mine = self._inflight + self._done_sum
                self._external = max(0, header - mine)
                self._external_until = now + self.window_s
            self._changed.notify_all()


def _checked(budget: int) -> int:
    if budget < KLINES_WEIGHT:
        raise ValueError(f"weight budget {budget} is below one request's weight")
    return budget

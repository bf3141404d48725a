"""The market clock's heartbeat: each tick sends the finals that came due, the forming-kline
updates on their own real-time cadence, and retires connections at their simulated lifetime.

The loop sleeps until the next kline close or lifetime expiry in simulated time (so a fast clock
closes candles on time), the next update, or a new subscription, whichever is first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ingestor.simulator.config import SimConfig
from ingestor.simulator.market import Market, SimClock, floor_to
from ingestor.simulator.stats import SimStats
from ingestor.simulator.streams import Streams

__all__ = ["Ticker"]

_log = logging.getLogger(__name__)


class Ticker:
    """Drives ``Streams`` from the ``Market`` on the ``SimClock``."""

    def __init__(
        self, config: SimConfig, stats: SimStats, clock: SimClock, market: Market, streams: Streams
    ) -> None:
        self.config = config
        self.stats = stats
        self.clock = clock
        self.market = market
        self.streams = streams

    def tick(self, send_updates: bool) -> int:
        """Emit due finals (and updates); return the sim time of the next kline close."""
        streams = self.streams
        now = self.clock.now_ms()
        next_close = now + 86_400_000
        for name in streams.names():
            parsed = streams.parse(name)
            if parsed is None:
                continue
            symbol, tf, iv = parsed
            cur = floor_to(now, iv)
            last = streams.last_open.get(name, cur)
            if cur > last:
                first = max(last, cur - self.config.max_finals_per_tick * iv)
                self.stats.finals_skipped += (first - last) // iv
                for t in range(first, cur, iv):
                    streams.deliver(name, self.market.event(symbol, tf, t, now), final=True)
                streams.last_open[name] = cur
            if send_updates:
                streams.deliver(name, self.market.event(symbol, tf, cur, now), final=False)
            next_close = min(next_close, cur + iv)
        expiry = streams.retire_expired(now)
        return next_close if expiry is None else min(next_close, expiry)

    async def run(self) -> None:
        """Tick until cancelled."""
        mono = self.config.time_source
        interval = self.config.update_interval_s
        wake = self.streams.changed
        next_update = mono() + interval
        while True:
            wake.clear()
            due = mono() >= next_update
            if due:
                next_update = max(next_update + interval, mono())
            try:
                next_sim = self.tick(send_updates=due)
            except Exception:  # a bug must not silently stop every stream: log, keep ticking
                _log.exception("simulator tick failed")
                next_sim = self.clock.now_ms() + 1000
            wait = min(next_update - mono(), self.clock.real_seconds_until(next_sim), 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=max(wait, 0.001))

"""Every kline that comes from REST, on its one way to the store.

REST ``/klines`` pages -> :mod:`ingestor.validate` (the candle rules; bad rows quarantined with
their reason, never raised) -> indicators (:func:`indicators.compute` over a series seeded far
enough back to equal TA-Lib over the stream's whole history) -> the live path's writer
(``CandleStore.insert``: the same BSON encoder as every live batch). Its users:

* the daemon's start (:mod:`ingestor.warmup`): cold start, restart, healing inside the stored
  window;
* the gate's gap fills and late-final probes (:meth:`History.pages`; the gate's incremental
  ``Bank`` continues the stream's converged state, so only validation happens here);
* ``ingestor backfill`` (the same pages and :func:`indicators.compute`, from a finite plan).

Seeding: a computation whose first stored candle opens at ``t`` starts
``indicators.SEED_KLINES`` klines before ``t`` (fetched, never stored); when the exchange's
history starts later, it starts at the exchange's first kline, which is exactly TA-Lib over the
whole history. Retention: a candle whose open time is already past ``market_data``'s
``expireAfterSeconds`` is never stored (:class:`ingestor.store.retention.Retention`); it may
still seed indicators.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import numpy as np
import numpy.typing as npt

import indicators
from ingestor.candles import Candles
from ingestor.rest import KLINES_LIMIT, ExchangeClock, RestClient
from ingestor.store.retention import Retention
from ingestor.streams import StreamKey
from ingestor.validate import Checked, Rejected, Window, check_body

__all__ = ["History", "Quarantine", "last_closed_open"]

log = logging.getLogger(__name__)

#: Where a rejected REST row goes: ``(reject, stream)`` (the daemon's ``RejectSink``).
Quarantine = Callable[[Rejected, StreamKey], None]


def last_closed_open(clock: ExchangeClock, interval_ms: int) -> int:
    """Open time of the newest kline that has surely closed on the exchange's clock."""
    return (clock.closed_before_ms() - interval_ms) // interval_ms * interval_ms


class History:
    """REST klines of ``keys`` (stream id = index), validated, enriched, stored."""

    def __init__(
        self,
        rest: RestClient,
        keys: list[StreamKey],
        quarantine: Quarantine,
        retention: Retention,
    ) -> None:
        self.rest = rest
        self.keys = keys
        self._quarantine = quarantine
        self.retention = retention

    def last_closed_open(self, sid: int) -> int:
        return last_closed_open(self.rest.clock, self.keys[sid].interval_ms)

    def window(self, sid: int, first: int, last: int, *, known_closed: bool = False) -> Window:
        """The time rules of a request for open times ``[first, last]``; ``known_closed``: a
        later kline of the stream has closed, so the whole range has."""
        iv, clock = self.keys[sid].interval_ms, self.rest.clock
        w = Window.rest(iv, clock.closed_before_ms(), clock.now_ms(), first=first, last=last)
        if known_closed:
            w = Window(iv, max(w.closed_until, last), max(w.horizon, last), first, last)
        return w

    def check(self, body: bytes, sid: int, window: Window) -> Checked:
        """One page checked; its bad rows quarantined."""
        checked = check_body(body, sid, window, limit=KLINES_LIMIT)
        for r in checked.rejected:
            self._quarantine(r, self.keys[sid])
        return checked

    async def pages(
        self, sid: int, first: int, last: int | None = None, *, known_closed: bool = False
    ) -> AsyncIterator[Candles]:
        """Valid closed candles opening in ``[first, last]`` (``last`` None: up to the newest
        closed one), a page (one request of ``KLINES_LIMIT``) at a time, in time order."""
        key = self.keys[sid]
        iv = key.interval_ms
        if last is None:
            last, known_closed = self.last_closed_open(sid), False
        cursor = first
        while cursor <= last:
            body = await self.rest.klines_body(
                key.symbol, key.timeframe, start_ms=cursor, end_ms=last, limit=KLINES_LIMIT
            )
            window = self.window(sid, cursor, last, known_closed=known_closed)
            checked = self.check(body, sid, window)
            page = checked.candles
            if len(page):
                yield page
            # a short page is the end; a full one continues after its last valid kline
            if checked.rows < KLINES_LIMIT or not len(page):
                return
            cursor = int(page.open_time[-1]) + iv

    async def series(
        self, sid: int, first: int, last: int, *, known_closed: bool = True
    ) -> Candles:
        """All valid candles opening in ``[first, last]`` (the caller bounds the range)."""
        parts = [p async for p in self.pages(sid, first, last, known_closed=known_closed)]
        return Candles.concat(parts)

    async def seeded(self, sid: int, first: int, last: int) -> tuple[Candles, int]:
        """Candles ``[first - SEED_KLINES, last]`` with indicators equal to TA-Lib over the
        whole history from ``first`` on, and the index of the first candle at or after
        ``first`` (the candles before it only seed)."""
        iv = self.keys[sid].interval_ms
        series = await self.series(sid, first - indicators.SEED_KLINES * iv, last)
        series.indicators = indicators.compute(series.close_f)
        return series, int(np.searchsorted(series.open_time, first))

    def storable(self, candles: Candles) -> npt.NDArray[np.bool_]:
        """Which of ``candles`` are still inside the retention (may be stored)."""
        return np.asarray(candles.open_time >= self.retention.cutoff_ms(), dtype=bool)

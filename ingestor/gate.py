"""The gate: every closed kline of every stream admitted once, in order, with no gap.

Between the feed and the store. Each stream's watermark (:class:`Sequencer`) decides: the next
expected kline is admitted; one past it first has the missing klines fetched from REST (in
order); a repeat or an older one is rejected (quarantined with its reason), except the live
final of a kline REST already delivered at the startup seam. A final ``final_grace_ms`` late is
fetched from REST (:meth:`Gate.watch_finals` queues a :class:`Probe`). Admitted klines are
batched (size, linger, or every stream of the close time in: see :mod:`ingestor.batch`),
enriched with indicators and handed to ``emit``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from ingestor.batch import Batcher
from ingestor.decode import ClosedKline
from ingestor.fanout import fan_out
from ingestor.pipeline import GateQueue, Live, Probe, Stop, Tracks
from ingestor.rejects import RejectSink
from ingestor.rest import ExchangeClock
from ingestor.sequence import VerdictKind

__all__ = ["Gate"]

log = logging.getLogger(__name__)


class Gate:
    """``Gate(tracks, batcher, rejects, caught_up)``: admits the queue's klines of ``tracks``'
    streams, batches them (``batcher``), quarantines bad ones (``rejects``) and sets
    ``caught_up`` once every stream is filled up to now (``startup_concurrency`` streams at
    once)."""

    def __init__(
        self,
        tracks: Tracks,
        batcher: Batcher,
        rejects: RejectSink,
        caught_up: asyncio.Event,
        startup_concurrency: int = 1,
    ) -> None:
        self.tracks = tracks
        self.keys = tracks.keys
        self.sequencer = tracks.sequencer
        self._batcher = batcher
        self._enricher = tracks.enricher
        self._history = tracks.history
        self._rejects = rejects
        self._state = tracks.state
        self._emit = tracks.emit
        self._from_rest = [False] * len(self.keys)  # last admitted kline came from REST
        self._probe_after = np.zeros(len(self.keys))  # monotonic time before which no probe
        self.caught_up = caught_up  # set once every stream is filled up to now
        self._startup_concurrency = startup_concurrency

    async def run(self, queue: GateQueue) -> None:
        """Catch every stream up from its watermark, then admit the queue's klines until STOP."""
        loop = asyncio.get_running_loop()
        # Live klines wait in the bounded queue meanwhile. Streams overlap; each one's klines
        # are added in order (all the batcher and the indicators need).
        n = len(self.keys)
        await fan_out(
            range(n),
            lambda sid: self.fill(sid, None),
            self._startup_concurrency,
            lambda done: log.info("catch-up: %d of %d streams", done, n),
        )
        log.info("caught up: %d klines from REST", self._state.rest_klines)
        self.caught_up.set()
        while True:
            try:  # what is already queued is taken without a timeout's cost per kline
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    async with asyncio.timeout_at(self._batcher.deadline()):
                        item = await queue.get()
                except TimeoutError:
                    self._flush()
                    continue
            if isinstance(item, Stop):
                self._flush()
                return
            if isinstance(item, Probe):
                await self.fill(item.stream_id, None)
            else:
                await self.admit(item)
            if self._batcher.due(loop.time()):
                self._flush()

    async def admit(self, live: Live) -> None:
        kline, raw = live
        sid, open_ms = kline.stream_id, int(kline.row[0])
        verdict = self.sequencer.check(sid, open_ms)
        if verdict.kind is VerdictKind.GAP:
            await self.fill(sid, open_ms)
            verdict = self.sequencer.check(sid, open_ms)
            if verdict.kind is VerdictKind.GAP:
                log.warning(
                    "%s: exchange has no klines in [%d, %d)",
                    self.keys[sid],
                    verdict.gap_start,
                    open_ms,
                )
        if verdict.kind in (VerdictKind.ACCEPT, VerdictKind.GAP):
            self.sequencer.advance(sid, open_ms)
            self._from_rest[sid] = False
            self._add(kline)
            if self._batcher.complete():  # every stream of this close time is in: no linger
                self._flush()
        elif self._from_rest[sid] and open_ms < self.sequencer.next_open[sid]:
            # The live final of a kline that REST already delivered: the seam, not bad input.
            self._state.seam_duplicates += 1
        else:
            self._rejects.reject(
                raw, verdict.kind.value, f"open_time {open_ms}", str(self.keys[sid])
            )

    async def fill(self, sid: int, before_ms: int | None) -> None:
        """Admit the stream's closed klines from its watermark up to ``before_ms`` (or now),
        validated by :mod:`ingestor.history` (bad rows quarantined there). Klines already
        past the retention only advance the indicators (never stored)."""
        start = int(self.sequencer.next_open[sid])
        if start < 0:
            return
        last = None if before_ms is None else before_ms - int(self.sequencer.interval[sid])
        async for page in self._history.pages(sid, start, last, known_closed=last is not None):
            page = page.take(page.open_time >= self.sequencer.next_open[sid])
            expired = ~self._history.storable(page)
            if expired.any():
                self._flush()  # the stream's earlier klines reach the indicators first
                old = self._enricher.enrich(page.take(expired))
                self.sequencer.advance(sid, int(old.open_time[-1]))
                self._state.expired_skipped += len(old)
                page = page.take(~expired)
            for row in page.rows():
                self.sequencer.advance(sid, int(row[0]))  # type: ignore[call-overload]
                self._from_rest[sid] = True
                self._state.rest_klines += 1
                self._add(ClosedKline(sid, row))

    def _add(self, kline: ClosedKline) -> None:
        full = self._batcher.add(kline, asyncio.get_running_loop().time())
        if full is not None:
            self._emit(self._enricher.enrich(full))

    def _flush(self) -> None:
        batch = self._batcher.flush()
        if batch is not None:
            self._emit(self._enricher.enrich(batch))

    async def watch_finals(
        self, queue: GateQueue, clock: ExchangeClock, final_grace_ms: int
    ) -> None:
        """Queue a :class:`Probe` for each stream whose next final is ``final_grace_ms`` (real
        time) late; a stream is probed again at most every ``max(1 s, grace)``."""
        grace_ms = final_grace_ms * clock.time_scale
        backoff_s = max(1.0, final_grace_ms / 1000)
        period = max(0.05, min(1.0, final_grace_ms / 4000))
        seq = self.sequencer
        while True:
            await asyncio.sleep(period)
            now = clock.now_ms()
            late = (seq.next_open >= 0) & (now > seq.next_open + seq.interval + grace_ms)
            late &= self._probe_after <= time.monotonic()
            for sid in np.flatnonzero(late).tolist():
                self._probe_after[sid] = time.monotonic() + backoff_s
                try:
                    queue.put_nowait(Probe(sid))
                except asyncio.QueueFull:
                    break
                self._state.final_probes += 1

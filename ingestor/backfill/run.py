"""The backfill pipeline: plan what is missing, fetch it from REST, add indicators, store it.

Per stream, for the closed klines opening in ``[since, until)``:

1. **Plan**: the range starts no earlier than the retention (``market_data``'s
   ``expireAfterSeconds``: older klines would be deleted at once; they are counted as
   ``expired_skipped``). One indexed query reads the open times and closes the database holds
   from ``max(warmup_candles, indicators.SEED_KLINES)`` klines before the range to its end;
   :func:`plan.missing_ranges` gives the holes. Nothing missing in the range: nothing is
   fetched (a second run makes no request).
2. **Fetch** the holes (warm-up holes too) as 1000-kline pages, several in flight, every request
   admitted by the shared :class:`WeightPacer`; each page is checked by
   :class:`ingestor.history.History` (``ingestor.validate``'s rules, the same as the daemon's:
   bad rows are quarantined in ``market_data_rejects``, not-yet-closed ones left out).
3. **Indicators** over the *continuous* series: stored closes (from the database, read in step 1:
   no refetch of what is stored) merged with fetched ones, from the warm-up's first kline, with
   :func:`indicators.compute` (TA-Lib's conventions; the warm-up is long enough for the values
   to equal TA-Lib over the stream's whole history). They are causal, so the
   series is processed in time-ordered chunks, each computed over the prefix up to its end:
   the values are those of one pass over the whole series (to the last bits of a double: the
   blocked kernels round by the array's length) while only one chunk of candles is held. A
   chunk is flushed at ``chunk_klines`` and at least half the series so far (so the prefix work
   stays ~2x one pass), or after ``linger_s`` (slow, paced fetching still stores as it goes).
4. **Store** each chunk through the live path's writer (:class:`CandleStore.insert`, BSON by
   ``store.documents.to_documents``), so the documents are the live daemon's, field for field,
   ``source`` included: ``"binance"`` (the klines are the exchange's; the spec's
   ``"backfill"`` would make backfilled and live documents differ). Warm-up klines before
   ``since`` are never stored. Chunks are stored in time order, so an interrupted run leaves a
   prefix and the next run's plan starts from what is there.

REST goes through the project's :class:`ingestor.rest.RestClient` rather than python-binance's
``AsyncClient``: the latter keeps response headers only in one ``client.response`` attribute
that concurrent calls overwrite (``X-MBX-USED-WEIGHT-1M`` and ``Retry-After`` need a client per
in-flight request), reaches a non-Binance base URL only by overwriting ``API_URL``, and decodes
every body twice with the stdlib ``json`` (text, then json), about 4x the CPU of ``orjson``
per 1000-kline page. Bodies are checked by ``ingestor.validate.check_body``, the live daemon's
path too: a compact body is cut into columns with numpy (no Python object per field), any other
goes through orjson, with the same result.

Throughput (``python -m bench backfill``): the CPU is the decode, the indicators and, mostly,
the writer's BSON encoding. The sink gets ``insert_batch`` = 1000 candles at a time: the
encoder's working set then stays in cache (~1.5x its rate on 5000). BLAS runs on one thread
during a run (see :func:`_one_blas_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

import indicators
from ingestor.backfill.existing import Stored
from ingestor.backfill.plan import Range, grid_bounds, missing_ranges, pages, range_count
from ingestor.candles import Candles
from ingestor.history import History
from ingestor.pacing import WeightPacer
from ingestor.rest import KLINES_LIMIT
from ingestor.store.documents import ms_to_datetime
from ingestor.streams import StreamKey

__all__ = ["Backfill", "CandleSink", "ProgressSink", "StreamPlan", "Summary"]

log = logging.getLogger(__name__)

_NO_TIMES = np.zeros(0, np.int64)
_NO_CLOSES = np.zeros(0, np.float64)

#: Reads a stream's stored (open times, closes) with open time in [start, end].
StoredReader = Callable[[StreamKey, int, int], Awaitable[Stored]]


class CandleSink(Protocol):
    """Where enriched candles go: :class:`ingestor.store.writer.CandleStore` or a bench sink."""

    async def insert(self, candles: Candles, *, suspect: bool = False) -> int: ...


class ProgressSink(Protocol):
    """What the pipeline reports as it goes (see :mod:`ingestor.backfill.progress`)."""

    def start(self, plans: list[StreamPlan]) -> None: ...

    def advance(self, stream_id: int, klines: int) -> None: ...

    def finish(self) -> None: ...


@dataclass(slots=True)
class StreamPlan:
    """One stream's range and what it lacks."""

    stream_id: int
    key: StreamKey
    first: int  # open time of the range's first closed kline
    last: int  # ... and of its last
    warm_start: int  # first open time of the warm-up
    stored_times: npt.NDArray[np.int64]  # stored open times in [warm_start, last], sorted
    stored_closes: npt.NDArray[np.float64]
    missing: list[Range]  # holes in [first, last]: fetched and stored
    warm_missing: list[Range]  # holes in [warm_start, first): fetched, not stored
    expired: int = 0  # klines of the asked range before the retention's start: skipped

    @property
    def expected(self) -> int:
        return (self.last - self.first) // self.key.interval_ms + 1

    @property
    def missing_klines(self) -> int:
        return range_count(self.missing, self.key.interval_ms)

    @property
    def present(self) -> int:
        return self.expected - self.missing_klines


@dataclass(slots=True)
class Summary:
    """Counts of one run; ``as_dict`` is what ``--json`` prints."""

    streams: int = 0
    expected: int = 0  # closed klines in the range, all streams
    missing: int = 0  # of which not stored before the run
    skipped_present: int = 0  # already stored: not fetched, not inserted
    fetched: int = 0  # klines of the range received from REST
    warmup_fetched: int = 0  # klines before the range fetched for the indicator state
    inserted: int = 0
    rejected: int = 0  # rows breaking the candle rules (quarantined, not stored)
    expired_skipped: int = 0  # klines in the range already past the retention (not stored)
    retention_start: str | None = None  # first open time the retention keeps (ISO), if any
    unavailable: int = 0  # missing klines the exchange did not return
    requests: int = 0
    weight_used: int = 0
    max_used_weight_1m: int = 0
    weight_budget: int = 0
    paced_s: float = 0.0  # time spent waiting for the weight budget (summed over requests)
    duration_s: float = 0.0
    dry_run: bool = False
    per_stream: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        from dataclasses import asdict

        out = asdict(self)
        out["duration_s"] = round(self.duration_s, 3)
        out["paced_s"] = round(self.paced_s, 3)
        return out


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS (the indicator kernels' matrix products) to one thread while in it.

    OpenBLAS's threads spin while they wait: on the small products of the blocked recurrences
    two threads take twice the CPU of one for the same result (to ~1e-12 relative) and starve
    the event loop's other work and whatever shares the machine (the exchange simulator, a live
    daemon). Without ``threadpoolctl`` installed, nothing is limited.
    """
    try:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return contextlib.nullcontext()
    limit: contextlib.AbstractContextManager[object] = ThreadpoolController().limit(
        limits=1, user_api="blas"
    )
    return limit


class Backfill:
    """Plans and runs one backfill over ``keys`` (stream id = index in ``keys``)."""

    def __init__(
        self,
        history: History,
        keys: list[StreamKey],
        *,
        read_stored: StoredReader,
        sink: CandleSink | None,
        concurrency: int,
        warmup_candles: int,
        progress: ProgressSink | None = None,
        chunk_klines: int = 10_000,
        linger_s: float = 2.0,
        insert_batch: int = 1000,
    ) -> None:
        self.history = history
        self.rest = history.rest
        self.keys = keys
        self._read_stored = read_stored
        self._sink = sink
        if history.rest.pacer is None:
            raise ValueError("a backfill needs a RestClient with a weight pacer")
        self.pacer: WeightPacer = history.rest.pacer  # paces every klines request
        self.concurrency = concurrency
        self.warmup = max(warmup_candles, indicators.SEED_KLINES)
        self._progress = progress
        self._chunk = max(KLINES_LIMIT, chunk_klines)
        self._linger_s = linger_s
        self._insert_batch = insert_batch
        self._requests = asyncio.Semaphore(concurrency)
        self.summary = Summary(weight_budget=self.pacer.budget)

    # -- plan ----------------------------------------------------------------------------------

    async def plan(self, since_ms: int, until_ms: int | None) -> list[StreamPlan]:
        """What each stream lacks in ``[since_ms, until_ms)`` (clamped to closed klines)."""
        now = self.rest.clock.closed_before_ms()
        cutoff = self.history.retention.cutoff_ms()
        limit = asyncio.Semaphore(self.concurrency)

        async def one(sid: int, key: StreamKey) -> StreamPlan | None:
            iv = key.interval_ms
            asked = grid_bounds(since_ms, until_ms, now, iv)
            bounds = grid_bounds(max(since_ms, cutoff), until_ms, now, iv)
            if asked is None:
                return None
            expired = (
                (asked[1] - asked[0]) // iv
                + 1
                - (0 if bounds is None else (bounds[1] - bounds[0]) // iv + 1)
            )
            if bounds is None:
                return StreamPlan(
                    sid,
                    key,
                    asked[0],
                    asked[0] - iv,
                    asked[0],
                    _NO_TIMES,
                    _NO_CLOSES,
                    [],
                    [],
                    expired,
                )
            first, last = bounds
            warm_start = first - self.warmup * iv
            async with limit:
                times, closes = await self._read_stored(key, warm_start, last)
            in_range = times >= first
            return StreamPlan(
                stream_id=sid,
                key=key,
                first=first,
                last=last,
                warm_start=warm_start,
                stored_times=times,
                stored_closes=closes,
                missing=missing_ranges(times[in_range], first, last, iv),
                warm_missing=missing_ranges(times[~in_range], warm_start, first - iv, iv),
                expired=expired,
            )

        found = await asyncio.gather(*(one(sid, key) for sid, key in enumerate(self.keys)))
        plans = [p for p in found if p is not None]
        s = self.summary
        s.streams = len(plans)
        s.expected = sum(p.expected for p in plans)
        s.missing = sum(p.missing_klines for p in plans)
        s.skipped_present = s.expected - s.missing
        s.expired_skipped = sum(p.expired for p in plans)
        if self.history.retention.expire_after_s is not None:
            s.retention_start = ms_to_datetime(cutoff).strftime("%Y-%m-%dT%H:%M:%SZ")
        return plans

    # -- run -----------------------------------------------------------------------------------

    async def run(self, plans: list[StreamPlan]) -> Summary:
        """Fetch, enrich and store what ``plans`` lack; raises on a 418 or a failed request."""
        if self._sink is None:
            raise ValueError("a dry run has no sink: call plan() only")
        t0 = time.monotonic()
        todo = [p for p in plans if p.missing]
        if self._progress is not None:
            self._progress.start(todo)
        streams = asyncio.Semaphore(self.concurrency)
        try:
            with _one_blas_thread():
                async with asyncio.TaskGroup() as tg:
                    for p in todo:
                        tg.create_task(self._stream(p, streams), name=f"backfill-{p.key}")
        finally:
            s = self.summary
            s.requests = self.pacer.requests
            s.weight_used = self.pacer.weight_sent
            s.max_used_weight_1m = self.pacer.max_header
            s.paced_s = self.pacer.waited_s
            s.duration_s = time.monotonic() - t0
            if self._progress is not None:
                self._progress.finish()
        return self.summary

    async def _fetch(self, key: StreamKey, sid: int, page: Range) -> Candles:
        a, b = page
        async with self._requests:
            body = await self.rest.klines_body(key.symbol, key.timeframe, start_ms=a, end_ms=b)
        checked = self.history.check(body, sid, self.history.window(sid, a, b))
        if checked.rejected:
            self.summary.rejected += len(checked.rejected)
            log.warning("%s: %d rows rejected (quarantined)", key, len(checked.rejected))
        return checked.candles

    async def _stream(self, p: StreamPlan, streams: asyncio.Semaphore) -> None:
        async with streams:
            iv = p.key.interval_ms
            todo = pages(p.warm_missing, iv, KLINES_LIMIT) + pages(p.missing, iv, KLINES_LIMIT)
            ahead: deque[asyncio.Task[Candles]] = deque()
            fetched_t: list[npt.NDArray[np.int64]] = []
            fetched_c: list[npt.NDArray[np.float64]] = []
            chunk: list[Candles] = []
            chunk_n = 0
            flushed = time.monotonic()
            it = iter(todo)
            try:
                while True:
                    while len(ahead) < self.concurrency and (page := next(it, None)) is not None:
                        ahead.append(asyncio.create_task(self._fetch(p.key, p.stream_id, page)))
                    if not ahead:
                        break
                    got = await ahead.popleft()
                    fetched_t.append(got.open_time)
                    fetched_c.append(got.close_f)
                    main = got.open_time >= p.first
                    n_main = int(main.sum())
                    self.summary.warmup_fetched += len(got) - n_main
                    if n_main:
                        chunk.append(got if n_main == len(got) else got.take(main))
                        chunk_n += n_main
                    series = len(p.stored_times) + sum(len(t) for t in fetched_t)
                    due = chunk_n >= max(self._chunk, series // 2)
                    if due or (chunk_n and time.monotonic() - flushed >= self._linger_s):
                        await self._store(p, Candles.concat(chunk), fetched_t, fetched_c)
                        chunk, chunk_n, flushed = [], 0, time.monotonic()
                if chunk:
                    await self._store(p, Candles.concat(chunk), fetched_t, fetched_c)
            finally:
                for task in ahead:
                    task.cancel()
        got_main = sum(int((t >= p.first).sum()) for t in fetched_t)
        lacking = p.missing_klines - got_main
        if lacking > 0:
            self.summary.unavailable += lacking
            log.warning("%s: the exchange has no data for %d missing klines", p.key, lacking)

    async def _store(
        self,
        p: StreamPlan,
        candles: Candles,
        fetched_t: list[npt.NDArray[np.int64]],
        fetched_c: list[npt.NDArray[np.float64]],
    ) -> None:
        """Indicators for ``candles`` over the series up to their last kline, then store them."""
        assert self._sink is not None
        end = int(candles.open_time.max())
        stored = p.stored_times <= end
        times = np.concatenate([p.stored_times[stored], *fetched_t])
        closes = np.concatenate([p.stored_closes[stored], *fetched_c])
        keep = times <= end
        times, closes = times[keep], closes[keep]
        order = np.argsort(times, kind="stable")
        times, closes = times[order], closes[order]
        values = indicators.compute(closes)
        candles.indicators = values[np.searchsorted(times, candles.open_time)]
        self.summary.fetched += len(candles)
        for i in range(0, len(candles), self._insert_batch):
            part = candles.take(np.arange(i, min(i + self._insert_batch, len(candles))))
            # suspect: a run killed mid-insert may still land documents after our plan
            inserted = await self._sink.insert(part, suspect=True)
            self.summary.inserted += inserted  # not `+= await`: that reads before awaiting
            if self._progress is not None:
                self._progress.advance(p.stream_id, len(part))

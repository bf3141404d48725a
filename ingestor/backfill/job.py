"""One backfill or gaps job: open the database and the exchange, plan, run, close.

The wiring between :class:`ingestor.config.Config` and :class:`~ingestor.backfill.run.Backfill`,
kept out of the CLI so tests and the daemon can run a job in-process (with a small weight limit
or a short window against the simulator).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ingestor.backfill.existing import read_stored
from ingestor.backfill.plan import grid_bounds, missing_ranges, range_count
from ingestor.backfill.run import Backfill, ProgressSink, StreamPlan, Summary
from ingestor.config import Config
from ingestor.errors import ConfigError
from ingestor.history import History
from ingestor.pacing import BINANCE_WEIGHT_LIMIT_1M, WeightPacer, share_of
from ingestor.rejects import RejectSink
from ingestor.rest import ExchangeClock, RestClient
from ingestor.state import PipelineState
from ingestor.store.database import open_database
from ingestor.store.documents import datetime_to_ms, ms_to_datetime
from ingestor.store.retention import read_retention
from ingestor.store.schema import MARKET_DATA, ensure_schema
from ingestor.store.writer import CandleStore
from ingestor.streams import StreamKey
from ingestor.validate import Rejected

__all__ = [
    "BackfillOptions",
    "GapsReport",
    "find_gaps",
    "run_job",
    "stream_keys",
]

_STARTUP_WEIGHT = 1 + 20  # /api/v3/time + /api/v3/exchangeInfo


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    """What one ``ingestor backfill`` asks for (the config supplies the rest)."""

    since_ms: int
    until_ms: int | None = None
    symbols: tuple[str, ...] = ()  # empty: the config's
    timeframes: tuple[str, ...] = ()  # empty: the config's
    dry_run: bool = False
    weight_limit: int = BINANCE_WEIGHT_LIMIT_1M  # the exchange's per-minute limit
    window_s: float = 60.0  # the exchange's weight window, in real seconds


def stream_keys(
    config: Config, symbols: tuple[str, ...], timeframes: tuple[str, ...]
) -> list[StreamKey]:
    return [
        StreamKey(s, t)
        for s in (symbols or config.ingest.symbols)
        for t in (timeframes or config.ingest.timeframes)
    ]


async def run_job(
    config: Config,
    opts: BackfillOptions,
    *,
    progress: ProgressSink | None = None,
    on_plan: Any = None,
) -> tuple[list[StreamPlan], Summary]:
    """Plan (and unless ``dry_run`` run) the backfill; the plans and the summary.

    Raises ``ConfigError`` for a symbol the exchange does not list, ``RateLimited`` on a 418,
    ``ExchangeError``/``PyMongoError`` when the exchange or the database fails.
    """
    t0 = time.monotonic()
    keys = stream_keys(config, opts.symbols, opts.timeframes)
    ex = config.exchange
    pacer = WeightPacer(share_of(opts.weight_limit, ex.max_weight_share), window_s=opts.window_s)
    clock = ExchangeClock(ex.time_scale)
    async with (
        open_database(config) as db,
        RestClient(ex.rest_url, ex.request_timeout_s, clock, pacer) as rest,
    ):
        await pacer.acquire(_STARTUP_WEIGHT)
        try:
            await rest.sync_time()
            listed = await rest.exchange_symbols()
        finally:
            await pacer.release(_STARTUP_WEIGHT, rest.used_weight or None)
        unknown = sorted({k.symbol for k in keys} - set(listed))
        if unknown:
            raise ConfigError("--symbols", f"not listed by the exchange: {', '.join(unknown)}")
        if not opts.dry_run:
            await ensure_schema(db, wait=False)
        coll = db[MARKET_DATA]

        async def reader(key: StreamKey, a: int, b: int) -> Any:
            return await read_stored(coll, key, a, b)

        rejects = RejectSink(PipelineState(len(keys)), 10_000)

        def quarantine(r: Rejected, key: StreamKey) -> None:
            rejects.reject(r.raw, r.reason, r.detail, str(key))

        history = History(rest, keys, quarantine, await read_retention(db))
        job = Backfill(
            history,
            keys,
            read_stored=reader,
            sink=None if opts.dry_run else CandleStore(db, keys),
            concurrency=config.backfill.concurrency,
            warmup_candles=config.backfill.warmup_candles,
            progress=progress,
        )
        plans = await job.plan(opts.since_ms, opts.until_ms)
        if on_plan is not None:
            on_plan(plans)
        summary = job.summary
        summary.dry_run = opts.dry_run
        summary.per_stream = [_stream_dict(p) for p in plans]
        try:
            if not opts.dry_run:
                async with asyncio.TaskGroup() as tg:
                    stored = tg.create_task(rejects.run(db), name="rejects")
                    try:
                        await job.run(plans)
                    finally:
                        await rejects.close()
                        await stored
        finally:
            summary.requests = pacer.requests
            summary.weight_used = pacer.weight_sent
            summary.max_used_weight_1m = pacer.max_header
            summary.paced_s = pacer.waited_s
            summary.duration_s = time.monotonic() - t0
    return plans, summary


def _iso(ms: int) -> str:
    return ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stream_dict(p: StreamPlan) -> dict[str, object]:
    iv = p.key.interval_ms
    return {
        "stream": str(p.key),
        "first": _iso(p.first),
        "last": _iso(p.last),
        "expected": p.expected,
        "missing": p.missing_klines,
        "ranges": [[_iso(a), _iso(b), (b - a) // iv + 1] for a, b in p.missing],
    }


@dataclass(slots=True)
class GapsReport:
    """One stream's holes in the database."""

    key: StreamKey
    first: int | None  # None: nothing stored and no --since
    last: int | None
    stored: int
    ranges: list[tuple[int, int]]

    def as_dict(self) -> dict[str, object]:
        iv = self.key.interval_ms
        return {
            "stream": str(self.key),
            "first": None if self.first is None else _iso(self.first),
            "last": None if self.last is None else _iso(self.last),
            "stored": self.stored,
            "missing": range_count(self.ranges, iv),
            "ranges": [[_iso(a), _iso(b), (b - a) // iv + 1] for a, b in self.ranges],
        }


async def find_gaps(
    db: AsyncDatabase[dict[str, Any]],
    keys: list[StreamKey],
    since_ms: int | None,
    until_ms: int | None,
    now_ms: int,
) -> list[GapsReport]:
    """Missing closed klines per stream in ``[since, until)``; without ``since``, from each
    stream's first stored kline (a stream with nothing stored then has no range). Never before
    the retention's start: what expired is not a gap."""
    coll = db[MARKET_DATA]
    cutoff = (await read_retention(db)).cutoff_ms()
    out: list[GapsReport] = []
    for key in keys:
        iv = key.interval_ms
        since = since_ms
        if since is None:
            doc = await coll.find_one(
                {"symbol": key.symbol, "timeframe": key.timeframe},
                {"_id": 0, "open_time": 1},
                sort=[("open_time", 1)],
            )
            if doc is None:
                out.append(GapsReport(key, None, None, 0, []))
                continue
            since = datetime_to_ms(doc["open_time"])
        bounds = grid_bounds(max(since, cutoff), until_ms, now_ms, iv)
        if bounds is None:
            out.append(GapsReport(key, None, None, 0, []))
            continue
        first, last = bounds
        times, _ = await read_stored(coll, key, first, last, closes=False)
        out.append(GapsReport(key, first, last, len(times), missing_ranges(times, first, last, iv)))
    return out

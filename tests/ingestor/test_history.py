"""``ingestor.history`` against the simulator's real REST server answering with any extra rows
(hypothesis): the warm-up's seeded series, the gate's pages and the backfill get valid candles
(bad rows quarantined with a reason), never an exception; nothing past the retention is
storable."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import indicators
from ingestor.backfill.run import Backfill
from ingestor.candles import Candles
from ingestor.history import History
from ingestor.pacing import WeightPacer
from ingestor.reasons import Reason
from ingestor.rest import ExchangeClock, RestClient
from ingestor.simulator import SimConfig, Simulator
from ingestor.store.retention import Retention
from ingestor.streams import StreamKey
from ingestor.validate import MAX_BODY_BYTES, Rejected
from tests.ingestor.test_validate import any_row

M = 60_000
KEYS = [StreamKey("BTCUSDT", "1m")]


class MemorySink:
    def __init__(self) -> None:
        self.parts: list[Candles] = []

    async def insert(self, candles: Candles, *, suspect: bool = False) -> int:
        self.parts.append(candles)
        return len(candles)


async def _exercise(extra: list[Any]) -> list[Rejected]:
    start = int(time.time() * 1000) // M * M
    cfg = SimConfig(symbols=("BTCUSDT",), start_ms=start, history_start_ms=start - 700 * M)
    cfg.faults.rest_extra_rows = extra
    rejected: list[Rejected] = []
    async with (
        Simulator(cfg) as sim,
        RestClient(sim.rest_url, 10.0, ExchangeClock(), WeightPacer(10**6)) as rest,
    ):
        await rest.sync_time()
        history = History(rest, KEYS, lambda r, k: rejected.append(r), Retention(None))
        last = history.last_closed_open(0)
        # the warm-up's seeded series
        series, at = await history.seeded(0, last - 99 * M, last)
        times = series.open_time
        assert (np.diff(times) > 0).all() and times[-1] == last and at == len(series) - 100
        assert series.indicators is not None
        assert np.array_equal(series.indicators, indicators.compute(series.close_f), equal_nan=True)
        # the gate's pages: up to now, or up to a kline known closed
        pages = [p async for p in history.pages(0, last - 20 * M)]
        assert int(Candles.concat(pages).open_time[-1]) == last
        pages = [p async for p in history.pages(0, last - 5 * M, last, known_closed=True)]
        assert len(Candles.concat(pages)) == 6
        # the backfill
        sink = MemorySink()
        job = Backfill(
            history, KEYS, read_stored=_nothing, sink=sink, concurrency=2, warmup_candles=100,
        )  # fmt: skip
        summary = await job.run(await job.plan(last - 30 * M, None))
        got = Candles.concat(sink.parts)
        assert summary.inserted == len(got) == 31 and int(got.open_time[0]) == last - 30 * M
    return rejected


async def _nothing(key: StreamKey, a: int, b: int) -> Any:
    return np.zeros(0, np.int64), np.zeros(0)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(any_row, max_size=6))
def test_any_rest_rows_give_valid_candles_or_rejects_to_every_user(extra: list[Any]) -> None:
    try:
        import orjson

        orjson.dumps(extra)
    except TypeError:
        return  # not JSON: the server could not send it
    rejected = asyncio.run(_exercise(extra))
    assert all(r.reason in Reason for r in rejected)


def test_nothing_past_the_retention_is_storable() -> None:
    now = int(time.time() * 1000)
    retention = Retention(3600)
    assert retention.cutoff_ms(now) == now - 3_600_000
    c = Candles.from_rows([0, 0], [_row(now - 7_200_000), _row(now - 1_800_000)])
    history = History(None, KEYS, lambda r, k: None, retention)  # type: ignore[arg-type]
    assert history.storable(c).tolist() == [False, True]
    assert History(None, KEYS, lambda r, k: None, Retention(None)).storable(c).all()  # type: ignore[arg-type]


def _row(t: int) -> list[Any]:
    return [t, "1", "1", "1", "1", "1", t + M - 1, "1", 1, "1", "1", "0"]


async def test_a_body_over_the_cap_is_cut_while_read_and_rejected() -> None:
    start = int(time.time() * 1000) // M * M
    cfg = SimConfig(symbols=("BTCUSDT",), start_ms=start, history_start_ms=start - 50 * M)
    cfg.faults.rest_extra_rows = ["x" * (MAX_BODY_BYTES + 1000)]
    rejected: list[Rejected] = []
    async with (
        Simulator(cfg) as sim,
        RestClient(sim.rest_url, 10.0, ExchangeClock(), WeightPacer(10**6)) as rest,
    ):
        await rest.sync_time()
        history = History(rest, KEYS, lambda r, k: rejected.append(r), Retention(None))
        body = await rest.klines_body("BTCUSDT", "1m", start_ms=start - 10 * M)
        assert len(body) == MAX_BODY_BYTES + 1  # never more held than that
        pages = [p async for p in history.pages(0, start - 10 * M)]
    assert pages == [] and [r.reason for r in rejected] == ["body_too_large"]

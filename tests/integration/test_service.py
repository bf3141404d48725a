"""The ``Service`` built in this process from injected parts: the real simulator and SecantusDB,
and one clock the test drives for both the exchange and the daemon's view of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingestor.assemble import build_service
from ingestor.config import (
    Config,
    ExchangeConfig,
    HealthConfig,
    IngestConfig,
    MongoConfig,
    PositionsConfig,
    ServiceConfig,
)
from ingestor.rest import ExchangeClock
from ingestor.service import Service
from ingestor.simulator import SimConfig, Simulator
from ingestor.simulator.market import floor_to
from ingestor.store.sink import NullStore
from tests.conftest import TIMEOUT_FACTOR
from tests.integration.harness import assert_exact, eventually, stored_docs

pytestmark = pytest.mark.slow

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TIMEFRAMES = ("1m", "5m")
STREAMS = {(s, t) for s in SYMBOLS for t in TIMEFRAMES}
SPEED = 60.0  # one real (driven) second is one exchange minute


class DrivenClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _sim_config(clock: DrivenClock) -> SimConfig:
    """The exchange opens 2 minutes into a 5-minute kline: the kline that closed as the daemon
    subscribed is then a 1m one, which the next live final's gap fill brings (a 5m one would
    wait for its late-final probe, ``final_grace_ms`` later)."""
    start = floor_to(int(time.time() * 1000), 300_000) + 120_000
    return SimConfig(symbols=SYMBOLS, speed=SPEED, time_source=clock, start_ms=start)


def _config(sim: Simulator, uri: str, db: str, data_dir: Path) -> Config:
    return Config(
        exchange=ExchangeConfig(ws_url=sim.ws_url, rest_url=sim.rest_url, time_scale=SPEED),
        mongodb=MongoConfig(uri=uri, database=db),
        ingest=IngestConfig(
            symbols=SYMBOLS, timeframes=TIMEFRAMES, linger_ms=20, warmup_candles=100
        ),
        health=HealthConfig(port=0),
        positions=PositionsConfig(enabled=False),
        service=ServiceConfig(data_dir=str(data_dir)),
    )


def _subscribed(sim: Simulator) -> Callable[[], Awaitable[bool]]:
    """The feed's one connection is open (its streams subscribed): finals from now on reach it."""

    async def check() -> bool:
        return sim.stats.connections_open == 1

    return check


def _stored_through(svc: Service, now_ms: int) -> Callable[[], Awaitable[bool]]:
    """Whether every stream's last kline closed by ``now_ms`` is stored (acknowledged)."""
    need = np.array([floor_to(now_ms, k.interval_ms) - k.interval_ms for k in svc.keys])

    async def check() -> bool:
        return bool((svc.state.last_stored_open >= need).all())

    return check


@contextlib.asynccontextmanager
async def _running(svc: Service, sim: Simulator) -> AsyncIterator[None]:
    """``svc`` running, caught up and its feed subscribed; on a clean exit, stopped and
    drained."""
    stop = asyncio.Event()
    async with svc:
        run = asyncio.create_task(svc.run(stop))
        await asyncio.wait_for(svc.caught_up.wait(), 60 * TIMEOUT_FACTOR)
        await eventually(_subscribed(sim), 30, "the feed subscribed")
        yield
        stop.set()
        await asyncio.wait_for(run, 30 * TIMEOUT_FACTOR)


async def test_a_service_built_in_process_stores_every_closed_kline_once(
    tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    clock = DrivenClock()
    async with Simulator(_sim_config(clock)) as sim:
        svc = build_service(
            _config(sim, mongo_uri, db_name, tmp_path),
            clock=ExchangeClock(SPEED, monotonic=clock),
        )
        async with _running(svc, sim):
            assert svc.health.port > 0
            for _ in range(12):  # twelve exchange minutes, one at a time
                clock.advance(1.0)
                await eventually(
                    _stored_through(svc, sim.clock.now_ms()), 30, "the closed klines stored"
                )
        now = sim.clock.now_ms()  # the clock stood still since the last advance
        docs = await stored_docs(mongo_uri, db_name)

    # Everything closed by the frozen now is stored, once, with the exchange's values; nothing
    # that had not closed.
    by_stream = assert_exact(sim, docs, now, now + 1, STREAMS)
    assert svc.state.inserted == len(docs) == sum(len(rows) for rows in by_stream.values())
    assert svc.state.closed_klines >= 12 * 2  # live finals came over the websocket
    assert not svc.state.rejects
    assert svc.state.frames > 0 and svc.state.batches > 0


async def test_a_service_with_a_null_store_acknowledges_without_storing(
    tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    clock = DrivenClock()
    async with Simulator(_sim_config(clock)) as sim:
        null: list[NullStore] = []

        def store(db: Any, registry: Any, state: Any) -> NullStore:
            null.append(NullStore(registry.keys))
            return null[-1]

        cfg = _config(sim, mongo_uri, db_name, tmp_path)
        svc = build_service(
            replace(cfg, ingest=replace(cfg.ingest, timeframes=("1m",))),
            clock=ExchangeClock(SPEED, monotonic=clock),
            store=store,
        )
        async with _running(svc, sim):
            before = svc.state.inserted
            clock.advance(3.0)
            await eventually(
                _stored_through(svc, sim.clock.now_ms()), 30, "three live minutes acknowledged"
            )
        docs = await stored_docs(mongo_uri, db_name)
    assert docs == []  # nothing reached the database ...
    assert null[0].inserted == svc.state.inserted >= before + 3 * len(SYMBOLS)  # ... all acked


@pytest.mark.timeout(240 * TIMEOUT_FACTOR)  # the first minute may wait out one linger
async def test_a_close_time_complete_is_stored_without_waiting_for_the_linger(
    tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    """A linger far longer than a minute's wait: each minute's klines are stored within
    seconds all the same, because the batch is flushed once every stream closing then is in.
    (The first minute after the start may hold a kline of the startup seam whose close time
    never completes in one batch: it may wait out the linger, so it is not measured.)"""
    linger_s = 60 * TIMEOUT_FACTOR
    clock = DrivenClock()
    async with Simulator(_sim_config(clock)) as sim:
        cfg = _config(sim, mongo_uri, db_name, tmp_path)
        svc = build_service(
            replace(cfg, ingest=replace(cfg.ingest, linger_ms=int(linger_s * 1000))),
            clock=ExchangeClock(SPEED, monotonic=clock),
        )
        async with _running(svc, sim):
            clock.advance(1.0)  # the startup seam's gap fills
            await eventually(
                _stored_through(svc, sim.clock.now_ms()), linger_s + 30, "the first minute"
            )
            for _ in range(6):  # a 5-minute close time among them: four klines at once
                clock.advance(1.0)
                t0 = time.monotonic()
                await eventually(_stored_through(svc, sim.clock.now_ms()), 20, "a minute's klines")
                assert time.monotonic() - t0 < linger_s / 3
        now = sim.clock.now_ms()
        docs = await stored_docs(mongo_uri, db_name)
    assert_exact(sim, docs, now, now + 1, STREAMS)


async def _cold_start(
    tmp_path: Path, mongo_uri: str, db_name: str, *, driven: bool, **faults: float
) -> tuple[Simulator, Service, int]:
    """16 streams started cold (``startup_concurrency`` 4) against a simulator advertising a
    weight limit of 1,000, with ``faults`` on its REST; run until everything the startup fetched
    is stored. ``driven``: the exchange's clock stands still (else it runs in real time: the
    simulator's rate limits count real seconds). The simulator (stopped), the service, and the
    exchange's now at the end."""
    clock = DrivenClock()
    symbols = tuple(f"S{i}USDT" for i in range(8))
    sim_cfg = replace(_sim_config(clock), symbols=symbols, weight_limit_1m=1000)
    if not driven:
        sim_cfg = replace(sim_cfg, speed=1.0, time_source=time.monotonic)
    async with Simulator(sim_cfg) as sim:
        sim.set_faults(**faults)
        base = _config(sim, mongo_uri, db_name, tmp_path)
        config = replace(
            base,
            exchange=replace(base.exchange, max_weight_share=0.5, time_scale=sim_cfg.speed),
            ingest=replace(base.ingest, symbols=symbols, startup_concurrency=4),
        )
        exchange_clock = ExchangeClock(sim_cfg.speed, monotonic=sim_cfg.time_source)
        svc = build_service(config, clock=exchange_clock)
        async with _running(svc, sim):

            async def stored() -> bool:
                st = svc.state
                return st.rest_klines > 0 and st.inserted >= st.rest_klines and not len(svc.journal)

            await eventually(stored, 60, "the cold start stored")
        return sim, svc, sim.clock.now_ms()


async def _assert_stored_once(sim: Simulator, svc: Service, now: int, uri: str, db: str) -> None:
    """Every stream stored exactly, through what had surely closed (a real second, times the
    speed, before ``now``)."""
    docs = await stored_docs(uri, db)
    streams = {(s, t) for s in sim.config.symbols for t in TIMEFRAMES}
    by_stream = assert_exact(sim, docs, now - int(1000 * sim.config.speed), now + 1, streams)
    assert svc.state.inserted == len(docs) == sum(len(rows) for rows in by_stream.values())
    assert not svc.state.rejects


async def test_startup_overlaps_streams_within_the_rest_bound_and_the_advertised_budget(
    tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    """Each REST answer 0.2 s late: the streams overlap (4 at once), but never more than 2
    klines requests are on their way, paced under 0.5 x the advertised 1,000; every stream is
    stored exactly once."""
    sim, svc, now = await _cold_start(tmp_path, mongo_uri, db_name, driven=True, rest_delay_s=0.2)
    pacer = svc.exchange.rest.pacer
    assert pacer is not None and pacer.budget == 500
    assert pacer.requests >= 16 and sim.stats.rest_429s == 0
    assert sim.stats.rest_in_flight_max == 2  # overlapped (1 before), bounded
    await _assert_stored_once(sim, svc, now, mongo_uri, db_name)


async def test_429s_during_a_concurrent_startup_earn_no_ban(
    tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    """Found by make soak: with 8 klines requests in flight, one 429 met several requests
    already sent, and the exchange banned the IP (418) at the second. With 2 in flight a 429
    meets at most one: the startup waits out every Retry-After and finishes."""
    sim, svc, now = await _cold_start(
        tmp_path, mongo_uri, db_name, driven=False, rest_429_p=0.3, rest_429_retry_after_s=1
    )
    assert sim.stats.rest_429s > 0 and sim.stats.rest_418s == 0
    await _assert_stored_once(sim, svc, now, mongo_uri, db_name)

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


async def test_startup_overlaps_streams_within_the_limit_and_the_advertised_budget(
    tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    """16 streams started cold, each REST answer 0.2 s late: the warm-up and the catch-up keep
    ``startup_concurrency`` requests in flight (never more), pace them under the share of the
    weight limit the exchange advertises, and store every stream exactly once."""
    clock = DrivenClock()
    symbols = tuple(f"S{i}USDT" for i in range(8))
    sim_cfg = replace(_sim_config(clock), symbols=symbols, weight_limit_1m=1000)
    async with Simulator(sim_cfg) as sim:
        sim.set_faults(rest_delay_s=0.2)
        base = _config(sim, mongo_uri, db_name, tmp_path)
        config = replace(
            base,
            exchange=replace(base.exchange, max_weight_share=0.5),
            ingest=replace(base.ingest, symbols=symbols, startup_concurrency=4),
        )
        svc = build_service(config, clock=ExchangeClock(SPEED, monotonic=clock))
        async with _running(svc, sim):
            in_flight = sim.stats.rest_in_flight_max
            pacer = svc.exchange.rest.pacer
            assert pacer is not None and pacer.budget == 500  # 0.5 x the advertised 1,000
            assert pacer.requests >= 16 and sim.stats.rest_429s == 0

            async def stored() -> bool:
                st = svc.state
                return st.rest_klines > 0 and st.inserted == st.rest_klines and not len(svc.journal)

            await eventually(stored, 30, "the cold start stored")
        now = sim.clock.now_ms()  # frozen: REST serves what closed a real second (x60) ago
        docs = await stored_docs(mongo_uri, db_name)

    assert 2 <= in_flight <= 4  # streams overlapped, never more than the limit
    streams = {(s, t) for s in symbols for t in TIMEFRAMES}
    by_stream = assert_exact(sim, docs, now - 60_000, now + 1, streams)
    assert svc.state.inserted == len(docs) == sum(len(rows) for rows in by_stream.values())
    assert not svc.state.rejects

"""The health endpoint over real HTTP: the real server on a free port, a real aiohttp client."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import prometheus_client
import pytest
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient, monitoring

from ingestor.config import load_config
from ingestor.errors import ConfigError
from ingestor.feed.connection import FeedConnection
from ingestor.feed.limits import AttemptBudget
from ingestor.health import HealthServer
from ingestor.metrics import Metrics
from ingestor.probe import ConnectionStatus, HealthProbe, StreamStatus, service_probe
from ingestor.rest import ExchangeClock
from ingestor.state import PipelineState
from ingestor.store.database import Database
from ingestor.streams import StreamKey
from tests.conftest import TIMEOUT_FACTOR

M = 60_000
NOW = 1_700_000_000_000 // M * M + 30_000  # mid-minute, exchange time


@dataclass
class World:
    """What a service would report; tests flip its fields between requests."""

    db: bool = True
    db_hangs: bool = False
    db_raises: bool = False
    catching_up: bool = False
    connected: list[bool] = field(default_factory=lambda: [True, True])
    last_open: dict[str, int] = field(
        default_factory=lambda: {
            "BTCUSDT:1m": NOW // M * M - M,
            "ETHUSDT:1h": NOW // 3_600_000 * 3_600_000 - 3_600_000,
        }
    )

    async def db_ok(self) -> bool:
        if self.db_hangs:
            await asyncio.Event().wait()
        if self.db_raises:
            raise ConnectionError("no route to database")
        return self.db

    def connections(self) -> list[ConnectionStatus]:
        return [ConnectionStatus(i, up, 0.25, i) for i, up in enumerate(self.connected)]

    def streams(self) -> list[StreamStatus]:
        tf = {"1m": M, "1h": 3_600_000}
        return [
            StreamStatus(name, tf[name.partition(":")[2]], last, i)
            for i, (name, last) in enumerate(self.last_open.items())
        ]

    def probe(self) -> HealthProbe:
        return HealthProbe(
            db_ok=self.db_ok,
            connections=self.connections,
            streams=self.streams,
            catching_up=lambda: self.catching_up,
            now_ms=lambda: NOW,
            grace_ms=5_000,
            expected_connections=2,
            version="9.9.9",
            queues=lambda: {"klines": (3, 10_000)},
        )


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def state() -> PipelineState:
    s = PipelineState(2)
    s.frames, s.closed_klines, s.rest_klines, s.batches, s.inserted = 1000, 40, 500, 12, 540
    s.rejects.update({"malformed_json": 3, "duplicate": 2})
    s.journal_depth = 1
    s.journal_syncs = 4
    return s


@pytest.fixture
async def server(world: World, state: PipelineState) -> AsyncIterator[tuple[HealthServer, str]]:
    probe = world.probe()
    metrics = Metrics(state, probe)
    # period_s=0: every request sees the world as the test just set it (no shared verdict)
    async with HealthServer("127.0.0.1", 0, probe, metrics, db_timeout_s=0.3, period_s=0) as hs:
        assert hs.port > 0
        yield hs, f"http://127.0.0.1:{hs.port}"


async def _get(url: str) -> tuple[int, Any, str]:
    async with ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body, text


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_ready_when_everything_is_up(server: tuple[HealthServer, str]) -> None:
    _, base = server
    status, body, _ = await _get(f"{base}/healthz")
    assert status == 200 and body == {"status": "alive", "version": "9.9.9"}
    status, body, _ = await _get(f"{base}/readyz")
    assert status == 200
    assert body["status"] == "ready" and body["failed"] == []
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["feed"]["connections"] == 2 and body["checks"]["feed"]["down"] == []

    status, body, _ = await _get(f"{base}/status")
    assert status == 200 and body["version"] == "9.9.9" and body["ready"] is True
    by_stream = {s["stream"]: s for s in body["streams"]}
    btc = by_stream["BTCUSDT:1m"]
    assert btc["last_stored_open_ms"] == NOW // M * M - M
    assert btc["last_stored_open"].startswith("2023-11-14T22:")
    assert btc["lag_s"] == 0 and btc["connection"] == 0 and btc["connected"] is True
    assert body["queues"] == {"klines": {"depth": 3, "capacity": 10_000}}
    assert [c["index"] for c in body["connections"]] == [0, 1]


async def test_metrics_are_prometheus_text_from_state_probe_and_events(
    server: tuple[HealthServer, str],
) -> None:
    hs, base = server
    assert isinstance(hs.metrics, Metrics)
    hs.metrics.observe_batch(500, 0.02)
    hs.metrics.observe_batch(3, 0.004)
    hs.metrics.observe_commit_latency(np.array([0.01, 0.2, 0.2, 7.0, 1e9, np.nan]))
    hs.metrics.observe_positions_refresh(0.003)
    async with ClientSession() as http, http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    s = _samples(text)
    assert s[("ingestor_frames_received_total", ())] == 1000
    assert s[("ingestor_closed_klines_total", ())] == 40
    assert s[("ingestor_candles_inserted_total", ())] == 540
    assert s[("ingestor_rejects_total", (("reason", "malformed_json"),))] == 3
    assert s[("ingestor_rejects_total", (("reason", "duplicate"),))] == 2
    assert s[("ingestor_journal_depth", ())] == 1
    assert s[("ingestor_journal_syncs_total", ())] == 4
    assert s[("ingestor_ready", ())] == 1 and s[("ingestor_database_up", ())] == 1
    assert s[("ingestor_feed_connected", (("connection", "1"),))] == 1
    assert s[("ingestor_feed_reconnects_total", (("connection", "1"),))] == 1
    assert s[("ingestor_queue_depth", (("queue", "klines"),))] == 3
    lag = ("ingestor_stream_lag_seconds", (("symbol", "BTCUSDT"), ("timeframe", "1m")))
    assert s[lag] == 0
    assert s[("ingestor_build_info", (("version", "9.9.9"),))] == 1
    # Histograms: cumulative buckets, count and sum exactly as observed (NaN dropped).
    assert s[("ingestor_batch_size_count", ())] == 2 and s[("ingestor_batch_size_sum", ())] == 503
    assert s[("ingestor_batch_size_bucket", (("le", "5.0"),))] == 1
    assert s[("ingestor_flush_latency_seconds_bucket", (("le", "0.025"),))] == 2
    c = "ingestor_commit_latency_seconds"
    assert s[(f"{c}_bucket", (("le", "0.05"),))] == 1
    assert s[(f"{c}_bucket", (("le", "0.25"),))] == 3
    assert s[(f"{c}_bucket", (("le", "10.0"),))] == 4
    assert s[(f"{c}_bucket", (("le", "3600.0"),))] == 4
    assert s[(f"{c}_bucket", (("le", "+Inf"),))] == 5 == s[(f"{c}_count", ())]
    assert s[("ingestor_positions_refresh_seconds_count", ())] == 1


async def test_database_down_is_degraded(server: tuple[HealthServer, str], world: World) -> None:
    _, base = server
    for how in ("false", "raises", "hangs"):
        world.db, world.db_raises, world.db_hangs = how != "false", how == "raises", how == "hangs"
        t0 = time.monotonic()
        status, body, _ = await _get(f"{base}/readyz")
        assert status == 503, how
        assert body["status"] == "degraded" and body["failed"] == ["database"], how
        assert time.monotonic() - t0 < 5 * TIMEOUT_FACTOR, "a hanging database must not hang"
    status, _, _ = await _get(f"{base}/healthz")
    assert status == 200  # alive: only readiness fails
    _, body, _ = await _get(f"{base}/status")
    assert body["database"] == {"ok": False} and body["status"] == "degraded"
    _, _, text = await _get(f"{base}/metrics")
    s = _samples(text)
    assert s[("ingestor_database_up", ())] == 0 and s[("ingestor_ready", ())] == 0


async def test_catching_up_after_a_restart(server: tuple[HealthServer, str], world: World) -> None:
    _, base = server
    world.catching_up = True
    world.last_open["BTCUSDT:1m"] = NOW // M * M - 30 * M  # 28 minutes of klines not stored
    world.last_open["ETHUSDT:1h"] = -1  # nothing stored yet
    status, body, _ = await _get(f"{base}/readyz")
    assert status == 503
    assert body["status"] == "catching_up"
    assert body["failed"] == ["streams", "catching_up"]
    stale = {s["stream"]: s["lag_s"] for s in body["checks"]["streams"]["stale"]}
    assert stale == {"BTCUSDT:1m": 28 * 60 + 30, "ETHUSDT:1h": None}
    _, body, _ = await _get(f"{base}/status")
    lag = {s["stream"]: s["lag_s"] for s in body["streams"]}
    assert lag == {"BTCUSDT:1m": 28 * 60 + 30, "ETHUSDT:1h": None}
    # Caught up but a stream still stale: degraded, naming only the stale stream.
    world.catching_up = False
    world.last_open["ETHUSDT:1h"] = NOW // 3_600_000 * 3_600_000 - 3_600_000
    status, body, _ = await _get(f"{base}/readyz")
    assert status == 503 and body["status"] == "degraded" and body["failed"] == ["streams"]
    world.last_open["BTCUSDT:1m"] = NOW // M * M - M
    status, body, _ = await _get(f"{base}/readyz")
    assert status == 200 and body["status"] == "ready"


async def test_a_feed_connection_down_or_missing_is_not_ready(
    server: tuple[HealthServer, str], world: World
) -> None:
    _, base = server
    world.connected = [True, False]
    status, body, _ = await _get(f"{base}/readyz")
    assert status == 503 and body["failed"] == ["feed"] and body["checks"]["feed"]["down"] == [1]
    world.connected = [True]  # fewer connections than the streams need (feed still starting)
    status, body, _ = await _get(f"{base}/readyz")
    assert status == 503 and body["failed"] == ["feed"]
    assert body["checks"]["feed"]["expected"] == 2


async def test_port_in_use_is_a_config_error(world: World) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"health\.port"):
            await HealthServer("127.0.0.1", port, world.probe()).start()


def test_every_metrics_instance_has_its_own_registry(state: PipelineState) -> None:
    a, b = Metrics(state, World().probe()), Metrics()
    a.observe_batch(10, 0.1)
    sa = _samples(a.render().decode())
    sb = _samples(b.render().decode())
    assert sa[("ingestor_batch_size_count", ())] == 1
    assert sb[("ingestor_batch_size_count", ())] == 0
    assert ("ingestor_frames_received_total", ()) not in sb  # b is not bound to a state
    assert not [n for n in prometheus_client.REGISTRY._names_to_collectors if "ingestor" in n]


def _database(mongo_uri: str, db_name: str) -> Database:
    base = load_config(None, env={})
    return Database(replace(base, mongodb=replace(base.mongodb, uri=mongo_uri, database=db_name)))


async def test_the_service_probe_reads_the_services_state_objects(
    mongo_uri: str, db_name: str
) -> None:
    base = load_config(None, env={})
    cfg = replace(base, exchange=replace(base.exchange, streams_per_connection=2))
    keys = [StreamKey("BTCUSDT", "1m"), StreamKey("BTCUSDT", "5m"), StreamKey("ETHUSDT", "1m")]
    state = PipelineState(len(keys))
    clock = ExchangeClock(1.0)

    async def sink(raw: str | bytes) -> bool:
        return False

    conns = [FeedConnection(i, "ws://127.0.0.1:1/x", sink, AttemptBudget()) for i in range(2)]
    feed = {c.index: c.state for c in conns}
    caught_up = asyncio.Event()
    database = _database(mongo_uri, db_name)
    probe = service_probe(
        cfg,
        keys,
        state,
        feed=feed,
        caught_up=caught_up,
        now_ms=clock.now_ms,
        db_ok=database.ping,
        queues=lambda: {"klines": (0, 10)},
    )
    assert probe.expected_connections == 2
    assert probe.grace_ms == cfg.ingest.final_grace_ms + cfg.ingest.linger_ms + 10_000
    assert not await probe.db_ok()  # no database yet
    assert probe.catching_up()
    assert [
        (s.stream, s.timeframe_ms, s.last_stored_open_ms, s.connection) for s in probe.streams()
    ] == [("BTCUSDT:1m", M, -1, 0), ("BTCUSDT:5m", 5 * M, -1, 0), ("ETHUSDT:1m", M, -1, 1)]
    async with database:
        caught_up.set()
        conns[1].state.connected = True
        conns[1].state.last_frame_at = time.monotonic() - 2.0
        state.last_stored_open[2] = 123 * M
        assert await probe.db_ok()  # a real ping
        state.set_db_ok(False)  # the writer's last insert failed
        assert not await probe.db_ok()
        assert not probe.catching_up()
        c0, c1 = probe.connections()
        assert (c0.connected, c0.last_frame_age_s) == (False, None)
        assert c1.connected and c1.last_frame_age_s is not None and 2.0 <= c1.last_frame_age_s < 60
        assert probe.streams()[2].last_stored_open_ms == 123 * M
        assert abs(probe.now_ms() - time.time() * 1000) < 60_000


class _Pings(monitoring.CommandListener):
    """Counts ``ping`` commands on the wire (a PyMongo command listener)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: Any) -> None:
        if event.command_name == "ping":
            self.count += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


async def test_concurrent_requests_share_one_database_ping_per_period(
    mongo_uri: str, db_name: str
) -> None:
    pings = _Pings()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, serverSelectionTimeoutMS=2000, event_listeners=[pings]
    )
    cfg = load_config(None, env={})
    keys = [StreamKey("BTCUSDT", "1m")]
    state = PipelineState(1)
    conns = [FeedConnection(0, "ws://127.0.0.1:1/x", _no_sink, AttemptBudget())]
    db = client[db_name]

    async def ping() -> bool:
        await db.command("ping")
        return True

    probe = service_probe(
        cfg,
        keys,
        state,
        feed={c.index: c.state for c in conns},
        caught_up=asyncio.Event(),
        now_ms=ExchangeClock().now_ms,
        db_ok=ping,
    )
    metrics = Metrics(state, probe)
    try:
        async with HealthServer("127.0.0.1", 0, probe, metrics, period_s=30) as hs:
            base = f"http://127.0.0.1:{hs.port}"
            async with ClientSession() as http:

                async def get(path: str) -> int:
                    async with http.get(base + path) as resp:
                        await resp.read()
                        return resp.status

                paths = ["/status"] * 200 + ["/readyz"] * 20 + ["/metrics"] * 20
                statuses = await asyncio.gather(*(get(p) for p in paths))
            assert statuses.count(200) == 200 + 20  # /readyz: 503, the feed is down
            assert pings.count == 1 and hs.evaluations == 1
    finally:
        await client.close()


async def _no_sink(raw: str | bytes) -> bool:
    return False

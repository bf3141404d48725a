"""Never lose a candle, never store one twice: fault injection against real processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from ingestor.feed.clients import WS_CLIENTS
from ingestor.simulator import FaultConfig, SimConfig, Simulator
from ingestor.store.documents import datetime_to_ms
from tests.conftest import TIMEOUT_FACTOR, DBServer
from tests.integration.harness import (
    Daemon,
    assert_exact,
    client,
    eventually,
    settle,
    stored_docs,
    write_config,
)

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TIMEFRAMES = ("1m", "5m", "15m")
STREAMS = {(s, t) for s in SYMBOLS for t in TIMEFRAMES}
SPEED = 120.0


def _config(tmp: Path, sim: Simulator, uri: str, db: str, ws_client: str = "websockets") -> Path:
    return write_config(
        tmp / "config.toml",
        sim,
        uri,
        db,
        tmp / "data",
        exchange={"ws_client": ws_client},
        symbols=list(SYMBOLS),
        timeframes=list(TIMEFRAMES),
        warmup_candles=100,
        final_grace_ms=400,
    )


async def _latest_1m(uri: str, db: str) -> int:
    mc = client(uri)
    try:
        doc = await mc[db]["market_data"].find_one(
            {"symbol": "ETHUSDT", "timeframe": "1m"}, sort=[("open_time", -1)]
        )
        return -1 if doc is None else datetime_to_ms(doc["open_time"])
    finally:
        await mc.close()


async def _run_until(daemon: Daemon, sim: Simulator, uri: str, db: str, minutes: int) -> None:
    target = sim.clock.now_ms() + minutes * 60_000

    async def reached() -> bool:
        if daemon.proc is not None and daemon.proc.returncode is not None:
            raise AssertionError(f"daemon died:\n{daemon.output()[-3000:]}")
        return await _latest_1m(uri, db) >= target

    await eventually(reached, 90, f"{minutes} more 1m candles")


async def _stop(
    daemon: Daemon, sim: Simulator, uri: str, db: str, streams: set[tuple[str, str]] = STREAMS
) -> tuple[int, int]:
    """Stop once every stream is stored through now: (through_ms, stop_ms) for assert_exact."""
    through_ms = await settle(sim, uri, db, streams)
    return through_ms, await daemon.stop(sim)


@pytest.mark.parametrize("ws_client", WS_CLIENTS)
async def test_flaky_feed_repeats_drops_and_garbage(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any, ws_client: str
) -> None:
    faults = FaultConfig(
        disconnect_every_s=2.0, repeat_final_p=0.05, drop_final_p=0.03, garbage_p=0.1
    )
    # 600x: ~250 finals in ~12 s, so 3% drops and 5% repeats surely happen in one run.
    cfg = SimConfig(symbols=SYMBOLS, speed=600.0, update_interval_s=0.1, faults=faults, seed=7)
    async with Simulator(cfg) as sim:
        daemon = spawn(_config(tmp_path, sim, mongo_uri, db_name, ws_client), tmp_path / "d.log")
        await daemon.start()
        await _run_until(daemon, sim, mongo_uri, db_name, 110)
        through_ms, stop_ms = await _stop(daemon, sim, mongo_uri, db_name)
        stats = sim.stats
    assert stats.fault_disconnects >= 2 and stats.finals_dropped >= 1
    assert stats.finals_repeated >= 1 and stats.garbage_sent >= 1
    assert_exact(sim, await stored_docs(mongo_uri, db_name), through_ms, stop_ms, STREAMS)
    mc = client(mongo_uri)
    try:
        reasons = set(await mc[db_name]["market_data_rejects"].distinct("reason"))
        sample = await mc[db_name]["market_data_rejects"].find_one()
    finally:
        await mc.drop_database(db_name)
        await mc.close()
    assert reasons & {"malformed_json", "missing_field", "bad_type", "bad_decimal"}
    assert "rule_violation" in reasons
    assert sample is not None and {"raw", "reason", "received_at", "stream"} <= set(sample)


async def test_sigkill_and_long_stop_then_restart(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    cfg = SimConfig(symbols=SYMBOLS, speed=SPEED, update_interval_s=0.1, seed=3)
    async with Simulator(cfg) as sim:
        conf = _config(tmp_path, sim, mongo_uri, db_name)
        daemon = spawn(conf, tmp_path / "d.log")
        await daemon.start()
        await _run_until(daemon, sim, mongo_uri, db_name, 6)
        await daemon.signal(signal.SIGKILL)
        assert await daemon.wait(10) == -signal.SIGKILL
        # Stopped for a long stretch of exchange time (~30 minutes), then restarted.
        gone = sim.clock.now_ms() + 30 * 60_000
        await eventually(_after(sim, gone), 30, "30 exchange minutes")
        daemon = spawn(conf, tmp_path / "d.log")
        await daemon.start()
        await _run_until(daemon, sim, mongo_uri, db_name, 4)
        through_ms, stop_ms = await _stop(daemon, sim, mongo_uri, db_name)
    docs = await stored_docs(mongo_uri, db_name)
    assert_exact(sim, docs, through_ms, stop_ms, STREAMS)


def _after(sim: Simulator, t_ms: int) -> Any:
    async def check() -> bool:
        return sim.clock.now_ms() >= t_ms

    return check


@pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="kills its own database server")
async def test_database_outage_and_kill_while_down(
    tmp_path: Path, db_name: str, spawn: Any
) -> None:
    server = DBServer(tmp_path / "db")
    server.start()
    cfg = SimConfig(symbols=SYMBOLS, speed=SPEED, update_interval_s=0.1, seed=5)
    try:
        async with Simulator(cfg) as sim:
            conf = _config(tmp_path, sim, server.uri, db_name)
            daemon = spawn(conf, tmp_path / "d.log")
            await daemon.start()
            await _run_until(daemon, sim, server.uri, db_name, 3)
            # The database dies for a while; the daemon keeps consuming and journals.
            server.stop(kill=True)
            journal = tmp_path / "data" / "journal" / "market_data.journal"
            await eventually(_exists(journal), 30, "batches journaled during the outage")
            resume = sim.clock.now_ms() + 8 * 60_000
            await eventually(_after(sim, resume), 30, "8 exchange minutes of outage")
            assert daemon.proc is not None and daemon.proc.returncode is None
            server.start()
            await _run_until(daemon, sim, server.uri, db_name, 3)
            # Now the daemon is killed while the database is down; both come back.
            server.stop(kill=True)
            await eventually(_exists(journal), 30, "journal during the second outage")
            await daemon.signal(signal.SIGKILL)
            await daemon.wait(10)
            server.start()
            daemon = spawn(conf, tmp_path / "d.log")
            await daemon.start()
            await _run_until(daemon, sim, server.uri, db_name, 3)
            through_ms, stop_ms = await _stop(daemon, sim, server.uri, db_name)
        assert_exact(sim, await stored_docs(server.uri, db_name), through_ms, stop_ms, STREAMS)
    finally:
        server.stop()


def _exists(path: Path) -> Any:
    async def check() -> bool:
        return path.exists()  # noqa: ASYNC240 - a stat, polled

    return check


async def test_writes_lost_inside_history_are_restored_at_start(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    """A database that acknowledged writes and lost them (failover rollback, a crash without a
    journal) leaves holes below the watermark: the next start finds and refills them."""
    cfg = SimConfig(symbols=SYMBOLS, speed=SPEED, update_interval_s=0.1, seed=11)
    async with Simulator(cfg) as sim:
        conf = _config(tmp_path, sim, mongo_uri, db_name)
        daemon = spawn(conf, tmp_path / "d.log")
        await daemon.start()
        await _run_until(daemon, sim, mongo_uri, db_name, 3)
        await daemon.stop(sim)
        mc = client(mongo_uri)
        try:
            coll = mc[db_name]["market_data"]
            victims = [
                d["open_time"]
                async for d in coll.find({"symbol": "BTCUSDT", "timeframe": "5m"})
                .sort("open_time", -1)
                .skip(3)
                .limit(4)
            ]
            before = await coll.find_one(
                {"open_time": victims[1], "timeframe": "5m", "symbol": "BTCUSDT"},
                {"_id": 0, "created_at": 0},
            )
            gone = await coll.delete_many(
                {"symbol": "BTCUSDT", "timeframe": "5m", "open_time": {"$in": victims}}
            )
            assert gone.deleted_count == 4
            daemon = spawn(conf, tmp_path / "d.log")
            await daemon.start()
            await _run_until(daemon, sim, mongo_uri, db_name, 2)
            through_ms, stop_ms = await _stop(daemon, sim, mongo_uri, db_name)
            after = await coll.find_one(
                {"open_time": victims[1], "timeframe": "5m", "symbol": "BTCUSDT"},
                {"_id": 0, "created_at": 0},
            )
        finally:
            await mc.close()
    assert after is not None and before is not None
    assert {k: v for k, v in after.items() if k != "indicators"} == {
        k: v for k, v in before.items() if k != "indicators"
    }
    for name, v in before["indicators"].items():  # incremental (live) vs batch (healed) math
        w = after["indicators"][name]
        assert (v is None) == (w is None)
        if v is not None:
            a, b = float(str(v)), float(str(w))
            assert abs(a - b) <= 1e-9 * max(1.0, abs(a)), (name, v, w)
    assert "missing klines inside the stored history restored" in daemon.output()
    assert_exact(sim, await stored_docs(mongo_uri, db_name), through_ms, stop_ms, STREAMS)


@pytest.mark.parametrize("ws_client", WS_CLIENTS)
async def test_24h_rollover_replaces_connections_without_loss(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any, ws_client: str
) -> None:
    """At 2400x a day lasts 36 real seconds: the daemon must replace each connection before
    the exchange's 24-hour cut-off (so the exchange never has to cut one) and lose nothing.

    It replaces at 23.5 h: 0.75 real seconds (x TIMEOUT_FACTOR) to open the new connection, get
    its first frame (updates every 0.05 s) and close the old one. At 3600x with 0.2 s updates
    that was 0.5 s with up to 0.2 s spent waiting for a frame: too tight for a busy machine."""
    speed = 2400.0 / TIMEOUT_FACTOR
    cfg = SimConfig(symbols=SYMBOLS, speed=speed, update_interval_s=0.05, seed=13)
    timeframes = ["5m", "15m", "1h"]
    async with Simulator(cfg) as sim:
        conf = write_config(
            tmp_path / "config.toml",
            sim,
            mongo_uri,
            db_name,
            tmp_path / "data",
            symbols=list(SYMBOLS),
            timeframes=timeframes,
            warmup_candles=100,
            final_grace_ms=400,
            exchange={"streams_per_connection": 2, "ws_client": ws_client},
        )
        daemon = spawn(conf, tmp_path / "d.log")
        await daemon.start()
        await eventually(
            lambda: _logged(daemon, "replacing before the 24h cut-off"), 60, "a rollover"
        )
        target = sim.clock.now_ms() + 2 * 3_600_000
        await eventually(_after(sim, target), 30, "two more exchange hours")
        streams = {(s, t) for s in SYMBOLS for t in timeframes}
        through_ms, stop_ms = await _stop(daemon, sim, mongo_uri, db_name, streams)
        stats = sim.stats
    assert stats.lifetime_disconnects == 0  # we always rolled over first
    assert stats.connections_total >= 6  # 3 connections, each replaced at least once
    assert_exact(sim, await stored_docs(mongo_uri, db_name), through_ms, stop_ms, streams)


async def _logged(daemon: Any, text: str) -> bool:
    return text in daemon.output()

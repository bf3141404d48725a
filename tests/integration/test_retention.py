"""Retention: ``market_data``'s ``expireAfterSeconds`` (read from the database) bounds what is
stored: a cold start and a backfill store nothing already past it and say what they skipped,
``gaps`` does not list expired ranges; on the embedded server (no time-series expiry) the
daemon deletes expired candles itself, on MongoDB it leaves that to the server."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import Decimal128

from ingestor.simulator import SimConfig, Simulator
from ingestor.store.documents import datetime_to_ms, ms_to_datetime
from ingestor.store.retention import EXPIRE_EVERY_S, Expirer, read_retention
from ingestor.store.schema import MARKET_DATA_TTL_S, ensure_schema
from ingestor.streams import StreamKey
from tests.integration.harness import (
    assert_whole_history_indicators,
    client,
    eventually,
    write_config,
)
from tests.integration.test_backfill import cli
from tests.integration.test_backfill import write_config as backfill_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

D = 86_400_000


def _iso(ms: int) -> str:
    return ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sim(**over: Any) -> Simulator:
    start = int(time.time() * 1000) // 60_000 * 60_000
    cfg: dict[str, Any] = dict(
        symbols=("BTCUSDT",), speed=60.0, start_ms=start, history_start_ms=start - 1000 * D
    )
    return Simulator(SimConfig(**(cfg | over)))


async def _caught_up(daemon: Any) -> None:
    async def done() -> bool:
        return "caught up:" in daemon.output()

    await eventually(done, 60, "the daemon's catch-up")


async def test_a_1d_cold_start_stores_nothing_past_the_retention(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    async with _sim() as sim:
        conf = write_config(
            tmp_path / "config.toml", sim, mongo_uri, db_name, tmp_path / "data",
            symbols=["BTCUSDT"], timeframes=["1d"], warmup_candles=120,
        )  # fmt: skip
        # Two clocks decide what is stored: the wall clock the retention's edge (as MongoDB's
        # expiry), the exchange's which days have closed. They need not be on the same day.
        before, closed_before = int(time.time() * 1000), sim.clock.now_ms() // D * D
        daemon = spawn(conf, tmp_path / "d.log")
        await daemon.start()
        await _caught_up(daemon)
        await daemon.signal()
        assert await daemon.wait(15) == 0, daemon.output()
        after, closed_after = int(time.time() * 1000), sim.clock.now_ms() // D * D
        mc = client(mongo_uri)
        try:
            docs = [d async for d in mc[db_name]["market_data"].find({}, {"_id": 0})]
        finally:
            await mc.drop_database(db_name)
            await mc.close()
    docs.sort(key=lambda d: d["open_time"])
    times = [datetime_to_ms(d["open_time"]) for d in docs]
    ttl = MARKET_DATA_TTL_S * 1000
    assert times[0] >= before - ttl  # nothing already expired
    assert times[0] - D < after - ttl  # the day before it was past the retention by then
    assert closed_before - D <= times[-1] <= closed_after - D  # up to the newest closed day
    assert times == list(range(times[0], times[-1] + D, D))  # all of it, once
    assert len(times) < 120  # the rest of the history only seeded the indicators
    assert "past the retention" in daemon.output()
    # the older klines seeded the indicators: TA-Lib over the whole history from the first
    assert all(v is not None for v in docs[0]["indicators"].values())
    assert_whole_history_indicators(sim, "BTCUSDT", "1d", docs)


async def test_backfill_since_before_the_retention_says_so_and_gaps_skip_expired_ranges(
    tmp_path: Path, mongo_uri: str, db_name: str, sync_db: Any
) -> None:
    async with _sim(speed=1.0) as sim:
        conf = str(backfill_config(tmp_path / "c.toml", sim, mongo_uri, db_name))
        now = int(time.time() * 1000)
        since, until = now - 100 * D, now - 80 * D
        cutoff = now - MARKET_DATA_TTL_S * 1000
        sel = ("--symbols", "BTCUSDT", "--timeframes", "1d")
        rng = ("--since", _iso(since), "--until", _iso(until))

        code, out, err = await cli("gaps", "--config", conf, *rng, *sel, "--json")
        assert code == 0, err
        (gap,) = json.loads(out)["streams"]
        assert gap["first"] >= _iso(cutoff - D) and gap["missing"] == len(range(
            -(-cutoff // D) * D, until, D))  # fmt: skip

        code, out, err = await cli("backfill", "--config", conf, *rng, *sel, "--json")
        assert code == 0, err
        summary = json.loads(out)
        lines = [ln for ln in err.splitlines() if "before the retention" in ln]
        assert len(lines) == 1 and summary["retention_start"] in lines[0], err
        asked = len(range(-(-since // D) * D, until, D))
        assert summary["expired_skipped"] >= asked - summary["expected"] - 1
        assert summary["expired_skipped"] + summary["expected"] == asked
        assert summary["inserted"] == summary["expected"] > 0

        code, out, err = await cli("gaps", "--config", conf, *rng, *sel, "--json")
        assert code == 0, err
        (gap,) = json.loads(out)["streams"]
        assert gap["missing"] == 0 and gap["ranges"] == []  # the expired part is no gap
        code, out, err = await cli("backfill", "--config", conf, *rng, *sel)
        assert code == 0 and "skipped as past the retention" in out, (out, err)

    coll = sync_db["market_data"]
    times = [datetime_to_ms(d["open_time"]) for d in coll.find({}, {"open_time": 1})]
    assert len(times) == summary["inserted"] and min(times) >= cutoff


async def test_the_embedded_servers_candles_expire_once_past_the_retention(
    mongo_uri: str, db_name: str
) -> None:
    """A short ``expireAfterSeconds`` on the test's own collection; the daemon's expirer."""
    mc = client(mongo_uri)
    db = mc[db_name]
    try:
        await db.create_collection(
            "market_data",
            timeseries={"timeField": "open_time", "metaField": "symbol", "granularity": "minutes"},
            expireAfterSeconds=3,
        )
        coll = db["market_data"]
        retention = await read_retention(db)
        assert retention.expire_after_s == 3
        now = int(time.time() * 1000)
        docs = [
            {"symbol": "BTCUSDT", "timeframe": "1m", "open_time": ms_to_datetime(t), "n": n}
            for n, t in (("old", now - 60_000), ("fresh", now), ("other", now - 60_000))
        ]
        docs[2]["symbol"] = "SOLUSDT"  # not a stream of this daemon: not its to delete
        await coll.insert_many(docs)
        deleted: list[int] = []
        expirer = Expirer(db, [StreamKey("BTCUSDT", "1m")], retention, on_deleted=deleted.append)
        assert expirer.every_s == EXPIRE_EVERY_S == 60  # at most once a minute in the daemon
        assert await expirer.expire_once() == 1
        assert sorted([d["n"] async for d in coll.find({})]) == ["fresh", "other"]

        async def fresh_expired() -> bool:
            await expirer.expire_once()
            return await coll.count_documents({"symbol": "BTCUSDT"}) == 0

        await eventually(fresh_expired, 20, "the fresh candle passing the retention")
        assert sum(deleted) == 2 and await coll.count_documents({}) == 1
    finally:
        await mc.drop_database(db_name)
        await mc.close()


async def test_the_daemon_deletes_only_where_the_server_does_not(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    """``mongodb.expiry``: ``auto`` with a URI leaves expiry to the server (MongoDB);
    ``daemon`` (the embedded SecantusDB's behaviour) deletes expired candles itself."""
    mc = client(mongo_uri)
    db = mc[db_name]
    old = {
        "symbol": "BTCUSDT",
        "timeframe": "1d",
        "open_time": ms_to_datetime(0),
        "close_price": Decimal128("1.5"),
    }
    try:
        await ensure_schema(db)
        async with _sim() as sim:
            for expiry, log in (("auto", "a.log"), ("daemon", "b.log")):
                old["open_time"] = ms_to_datetime(int(time.time() * 1000) // D * D - 100 * D)
                await db["market_data"].insert_one(dict(old))
                conf = write_config(
                    tmp_path / f"{expiry}.toml", sim, mongo_uri, db_name, tmp_path / "data",
                    mongodb={"expiry": expiry}, symbols=["BTCUSDT"], timeframes=["1d"],
                    warmup_candles=100,
                )  # fmt: skip
                daemon = spawn(conf, tmp_path / log)
                await daemon.start()
                await _caught_up(daemon)
                await daemon.signal()
                assert await daemon.wait(15) == 0, daemon.output()
                # past the retention: only what the test planted (the restart's REST fill from
                # it stored nothing older; the klines it crossed only advanced the indicators)
                now = ms_to_datetime(int(time.time() * 1000))
                expired = now - timedelta(seconds=MARKET_DATA_TTL_S + 60)
                left = await db["market_data"].count_documents({"open_time": {"$lt": expired}})
                if expiry == "auto":
                    assert "deleted by the server" in daemon.output()
                    assert "candles past the retention" not in daemon.output()
                    if not os.environ.get("MONGODB_URI"):
                        assert left == 1  # SecantusDB keeps it: nobody deletes
                else:
                    assert "deleted by the daemon" in daemon.output()
                    assert "deleted 2 candles past the retention" in daemon.output()
                    assert left == 0
    finally:
        await mc.drop_database(db_name)
        await mc.close()

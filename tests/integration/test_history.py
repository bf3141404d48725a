"""One history path, end to end: an exchange whose history starts long before the daemon's
first start; every stored candle's indicators equal TA-Lib over that whole history, from the
first stored candle on, after a cold start, a kill -9 restart that heals lost klines, forced
REST gap fills, and for a backfill range in the middle of the history. Bad REST rows are
quarantined with their reason; a far-future kline moves nothing."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ingestor.backfill.job import BackfillOptions, run_job
from ingestor.config import load_config
from ingestor.simulator import SimConfig, Simulator
from ingestor.store.documents import datetime_to_ms, ms_to_datetime
from tests.conftest import TIMEOUT_FACTOR
from tests.integration.harness import (
    assert_exact,
    assert_whole_history_indicators,
    client,
    eventually,
    real_replays,
    settle,
    write_config,
)
from tests.integration.test_backfill import write_config as backfill_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

M = 60_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
TIMEFRAMES = ("1m", "5m", "15m")
HISTORY_KLINES = 3000  # 1m klines the exchange has before the daemon first starts
YEAR_2100 = 4_102_444_800_000  # 2100-01-01, on every interval's grid


def _sim_config(**over: Any) -> SimConfig:
    start = int(time.time() * 1000) // M * M
    base: dict[str, Any] = dict(
        symbols=SYMBOLS,
        speed=60.0,
        update_interval_s=0.2,
        start_ms=start,
        history_start_ms=start - HISTORY_KLINES * M,
        replays={k: v for k, v in real_replays().items() if k.symbol in SYMBOLS},
    )
    return SimConfig(**(base | over))


async def _latest(coll: Any, sym: str, tf: str) -> int:
    """The newest stored open time of a stream (a far-future test candle aside)."""
    query = {"symbol": sym, "timeframe": tf, "open_time": {"$lt": ms_to_datetime(YEAR_2100)}}
    doc = await coll.find_one(query, sort=[("open_time", -1)])
    return -1 if doc is None else datetime_to_ms(doc["open_time"])


async def _live_until(coll: Any, target: int, what: str) -> None:
    async def reached() -> bool:
        return all([await _latest(coll, s, "1m") >= target for s in SYMBOLS])

    await eventually(reached, 90, what)


async def test_indicators_equal_talib_over_the_whole_history_through_restart_heal_and_gap_fills(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    async with Simulator(_sim_config()) as sim:
        conf = write_config(
            tmp_path / "config.toml", sim, mongo_uri, db_name, tmp_path / "data",
            symbols=list(SYMBOLS), timeframes=list(TIMEFRAMES), warmup_candles=120,
        )  # fmt: skip
        mc = client(mongo_uri)
        coll = mc[db_name]["market_data"]
        try:
            first = spawn(conf, tmp_path / "d1.log")
            await first.start()
            await _live_until(coll, sim.clock.now_ms() + 3 * M, "cold start and live 1m")
            await first.kill()  # kill -9
            assert await first.wait(10) == -signal.SIGKILL

            # klines lost inside the stored window: the restart restores them
            btc = [d async for d in coll.find({"symbol": "BTCUSDT", "timeframe": "1m"})]
            btc.sort(key=lambda d: d["open_time"])
            lost = [d["open_time"] for d in btc[-40:-35]]
            await coll.delete_many(
                {"symbol": "BTCUSDT", "timeframe": "1m", "open_time": {"$in": lost}}
            )
            # finals the feed never delivers: the gate fills them from REST
            sim.set_faults(drop_final_p=0.5)
            second = spawn(conf, tmp_path / "d2.log")
            await second.start()
            await _live_until(coll, sim.clock.now_ms() + 8 * M, "restart and live 1m")
            sim.set_faults(drop_final_p=0.0)  # the last klines arrive before the stop
            await _live_until(coll, sim.clock.now_ms() + 2 * M, "the last finals")
            streams = {(s, t) for s in SYMBOLS for t in TIMEFRAMES}
            through_ms = await settle(sim, mongo_uri, db_name, streams)
            await second.signal()
            assert await second.wait(15) == 0, second.output()
            stop_ms = sim.clock.now_ms()  # nothing closed after this can be stored
            docs = [d async for d in coll.find({}, {"_id": 0})]
        finally:
            await mc.drop_database(db_name)
            await mc.close()

    assert sim.stats.finals_dropped >= 3
    by_stream = assert_exact(sim, docs, through_ms, stop_ms, streams)
    for (sym, tf), rows in by_stream.items():
        assert len(rows) >= 120  # the cold start's warm-up
        assert {datetime_to_ms(t) for t in lost} <= {
            datetime_to_ms(d["open_time"]) for d in by_stream[("BTCUSDT", "1m")]
        }
        if tf == "1m":  # a long history: every indicator has its value from the first candle
            assert all(v is not None for v in rows[0]["indicators"].values()), (sym, tf)
        # the exchange's history starts at sim.market.first_open: TA-Lib from there
        assert_whole_history_indicators(sim, sym, tf, rows)
    assert "missing klines inside the stored history restored" in second.output()


async def test_backfill_range_in_the_middle_of_the_history(
    mongo_uri: str, db_name: str, sync_db: Any, tmp_path: Path
) -> None:
    async with Simulator(_sim_config(speed=1.0, replays={})) as sim:
        conf = load_config(backfill_config(tmp_path / "c.toml", sim, mongo_uri, db_name))
        h0 = sim.market.first_open("1m")
        ranges = ((h0 + 1500 * M, h0 + 1900 * M), (h0 + 100 * M, h0 + 200 * M))
        for since, until in ranges:  # one far from the start, one closer than the seed horizon
            opts = BackfillOptions(since, until, SYMBOLS, ("1m", "1h"))
            _, summary = await run_job(conf, opts)
            assert summary.inserted == summary.expected > 0 and summary.rejected == 0
        mc = client(mongo_uri)
        try:
            docs = [d async for d in mc[db_name]["market_data"].find({}, {"_id": 0})]
        finally:
            await mc.close()
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in docs:
        by.setdefault((d["symbol"], d["timeframe"]), []).append(d)
    assert set(by) == {(s, t) for s in SYMBOLS for t in ("1m", "1h")}
    for (sym, tf), rows in by.items():
        rows.sort(key=lambda d: d["open_time"])
        assert_whole_history_indicators(sim, sym, tf, rows)
    assert len(by[("BTCUSDT", "1m")]) == 500


def _row(t: int, iv: int = M, **over: Any) -> list[Any]:
    row = [t, "10.0", "11.0", "9.0", "10.5", "1.0", t + iv - 1, "10.0", 3, "0.5", "5.0", "0"]
    for i, v in over.items():
        row[int(i[1:])] = v
    return row


async def test_bad_rest_rows_are_quarantined_and_a_far_future_kline_moves_nothing(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    year_2100 = YEAR_2100
    base = int(time.time() * 1000) // M * M - 5 * M
    bad_rows: list[Any] = [
        "abc",
        {"t": base},
        [base, "1.0"],  # short
        _row(base, c4="NaN"),
        _row(base, c4="Infinity"),
        _row(base, c2="1e5"),
        _row(base, c1="\uff11\uff10.0"),  # non-ASCII (fullwidth) digits
        _row(base, c2="1" + "0" * 34),  # 35 digits: would be cut to 32
        _row(base + 1),  # misaligned
        _row(base, c6=base + M),  # close time != open time + interval - 1
        _row(base, c2="8.0"),  # high < low
        _row(year_2100),  # far in the future
    ]
    cfg = _sim_config(symbols=("BTCUSDT",), replays={})
    cfg.faults.rest_extra_rows = bad_rows
    async with Simulator(cfg) as sim:
        conf = write_config(
            tmp_path / "config.toml", sim, mongo_uri, db_name, tmp_path / "data",
            symbols=["BTCUSDT"], timeframes=["1m"], warmup_candles=100,
        )  # fmt: skip
        mc = client(mongo_uri)
        coll = mc[db_name]["market_data"]
        rejects = mc[db_name]["market_data_rejects"]
        try:
            first = spawn(conf, tmp_path / "d1.log")
            await first.start()

            async def live(target: int) -> bool:
                return await _latest(coll, "BTCUSDT", "1m") >= target

            target = sim.clock.now_ms() + 3 * M
            await eventually(lambda: live(target), 60, "live klines after the bad pages")
            sim.set_faults(drop_final_p=1.0)  # every later kline comes through a REST fill
            target = sim.clock.now_ms() + 3 * M
            await eventually(lambda: live(target), 60, "REST fills past the far-future row")
            await first.kill()
            await first.wait(10)
            sim.set_faults(drop_final_p=0.0)
            # A database an older version wrote a far-future candle into: ignored at start.
            await coll.insert_one(
                {"symbol": "BTCUSDT", "timeframe": "1m", "open_time": ms_to_datetime(year_2100)}
            )
            second = spawn(conf, tmp_path / "d2.log")
            t0 = time.monotonic()
            await second.start()
            assert second.proc is not None
            target = sim.clock.now_ms() + 2 * M
            await eventually(lambda: live(target), 60, "the restart ignores the future candle")
            restart_s = time.monotonic() - t0
            status = await asyncio.to_thread(Path(f"/proc/{second.proc.pid}/status").read_text)
            peak_kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            through_ms = await settle(sim, mongo_uri, db_name, {("BTCUSDT", "1m")})
            await second.signal()
            assert await second.wait(15) == 0, second.output()
            stop_ms = sim.clock.now_ms()  # nothing closed after this can be stored
            future = await coll.delete_many({"open_time": {"$gt": ms_to_datetime(stop_ms)}})
            docs = [d async for d in coll.find({}, {"_id": 0})]
            reasons = {
                r: await rejects.count_documents({"reason": r})
                for r in await rejects.distinct("reason")
            }
            sample = await rejects.find_one({"reason": "future_kline"})
        finally:
            await mc.drop_database(db_name)
            await mc.close()

    assert future.deleted_count == 1  # only the one written behind the daemon's back
    assert_exact(sim, docs, through_ms, stop_ms, {("BTCUSDT", "1m")})  # only the real klines
    for reason in ("bad_type", "bad_decimal", "misaligned", "bad_close_time", "future_kline"):
        assert reasons.get(reason, 0) >= 1, (reason, reasons)
    assert reasons.get("rule_violation", 0) >= 1
    assert sample is not None and json.loads(sample["raw"])[0] == year_2100
    assert sample["stream"] == "BTCUSDT:1m"
    # the restart neither walks nor allocates over the distance to the far-future candle
    assert restart_s < 30 * TIMEOUT_FACTOR and peak_kb < 1_000_000, (restart_s, peak_kb)

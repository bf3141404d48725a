"""simulator -> `ingestor run` (a real process) -> real wire-protocol database, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bson import Decimal128

from indicators import SEED_KLINES
from ingestor.simulator import SimConfig, Simulator
from ingestor.store.documents import datetime_to_ms
from ingestor.store.schema import MARKET_DATA_TTL_S
from ingestor.streams import TIMEFRAME_MS
from tests.integration.harness import (
    SYMBOLS,
    TIMEFRAMES,
    assert_exact,
    assert_whole_history_indicators,
    client,
    eventually,
    real_replays,
    settle,
    write_config,
)

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

SPEED = 120.0  # a 1m kline closes every 0.5 s
STREAMS = {(s, t) for s in SYMBOLS for t in TIMEFRAMES}
DEC = ("open_price", "high_price", "low_price", "close_price", "volume", "quote_volume")
ROW_IDX = {
    "open_price": 1,
    "high_price": 2,
    "low_price": 3,
    "close_price": 4,
    "volume": 5,
    "quote_volume": 7,
    "taker_buy_base_volume": 9,
    "taker_buy_quote_volume": 10,
}


async def test_every_closed_kline_stored_once_with_exact_fields_and_indicators(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    cfg = SimConfig(symbols=SYMBOLS, speed=SPEED, update_interval_s=0.1, replays=real_replays())
    async with Simulator(cfg) as sim:
        conf = write_config(
            tmp_path / "config.toml", sim, mongo_uri, db_name, tmp_path / "data", warmup_candles=120
        )
        daemon = spawn(conf, tmp_path / "daemon.log")
        mc = client(mongo_uri)
        coll = mc[db_name]["market_data"]
        try:
            await daemon.start()
            start_ms = sim.clock.now_ms()
            target = start_ms + 20 * 60_000  # 20 live 1m closes (~10 s)

            async def live_1m_stored() -> bool:
                doc = await coll.find_one(
                    {"symbol": "BNBUSDT", "timeframe": "1m"}, sort=[("open_time", -1)]
                )
                return doc is not None and datetime_to_ms(doc["open_time"]) >= target

            await eventually(live_1m_stored, 60, "20 live 1m candles")
            through_ms = await settle(sim, mongo_uri, db_name, STREAMS)
            stop_ms = await daemon.stop(sim)
            docs = [d async for d in coll.find({}, {"_id": 0})]
        finally:
            await mc.drop_database(db_name)
            await mc.close()

    # Every closed kline from the first stored one on, once, contiguous, none open ...
    by_stream = assert_exact(sim, docs, through_ms, stop_ms, STREAMS)
    # ... and every field the exchange sent, indicators equal to TA-Lib over the whole series.
    for (sym, tf), rows in by_stream.items():
        expected = sim.market.closed_klines(sym, tf, datetime_to_ms(rows[0]["open_time"]), stop_ms)
        # the warm-up history is stored too, as far as the retention keeps it
        assert len(rows) >= min(120, MARKET_DATA_TTL_S * 1000 // TIMEFRAME_MS[tf] - 1)
        for d, r in zip(rows, expected, strict=False):
            for field, i in ROW_IDX.items():
                assert d[field] == Decimal128(str(r[i])), (sym, tf, field)
                assert isinstance(d[field], Decimal128)
            assert datetime_to_ms(d["close_time"]) == int(r[6]) and d["trades_count"] == int(r[8])
            assert d["source"] == "binance" and d["created_at"].tzinfo is not None
        # indicators: TA-Lib over the stream's whole history, from the first stored candle on
        assert_whole_history_indicators(sim, sym, tf, rows, history_from=3 * SEED_KLINES)


async def test_symbol_the_exchange_does_not_list_stops_startup(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    async with Simulator(SimConfig(symbols=("BTCUSDT",), speed=1.0)) as sim:
        conf = write_config(
            tmp_path / "config.toml",
            sim,
            mongo_uri,
            db_name,
            tmp_path / "data",
            symbols=["BTCUSDT", "FOOUSDT"],
            timeframes=["1h"],
        )
        daemon = spawn(conf, tmp_path / "daemon.log")
        await daemon.start()
        assert await daemon.wait(30) == 2
    out = daemon.output()
    assert "ingest.symbols" in out and "FOOUSDT" in out

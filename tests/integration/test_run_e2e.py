"""simulator -> `ingestor run` (a real process) -> real wire-protocol database, end to end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import talib
from bson import Decimal128

from ingestor.simulator import SimConfig, Simulator
from ingestor.store.documents import datetime_to_ms
from tests.integration.harness import (
    SYMBOLS,
    TIMEFRAMES,
    assert_exact,
    client,
    eventually,
    real_replays,
    write_config,
)

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

SPEED = 120.0  # a 1m kline closes every 0.5 s
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


def _close(a: float | None, b: float, scale: float) -> bool:
    if math.isnan(b):
        return a is None
    return a is not None and abs(a - b) <= 1e-9 * max(1.0, scale)


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
            stop_ms = sim.clock.now_ms()
            await daemon.signal()
            assert await daemon.wait(10) == 0, daemon.output()
            docs = [d async for d in coll.find({}, {"_id": 0})]
        finally:
            await mc.drop_database(db_name)
            await mc.close()

    # Every closed kline from the first stored one on, once, contiguous, none open ...
    by_stream = assert_exact(sim, docs, stop_ms, {(s, t) for s in SYMBOLS for t in TIMEFRAMES})
    # ... and every field the exchange sent, indicators equal to TA-Lib over the whole series.
    for (sym, tf), rows in by_stream.items():
        expected = sim.market.closed_klines(sym, tf, datetime_to_ms(rows[0]["open_time"]), stop_ms)
        assert len(rows) >= 120  # the warm-up history is stored too
        for d, r in zip(rows, expected, strict=False):
            for field, i in ROW_IDX.items():
                assert d[field] == Decimal128(str(r[i])), (sym, tf, field)
                assert isinstance(d[field], Decimal128)
            assert datetime_to_ms(d["close_time"]) == int(r[6]) and d["trades_count"] == int(r[8])
            assert d["source"] == "binance" and d["created_at"].tzinfo is not None
        _check_indicators(sym, tf, rows, expected)


def _check_indicators(sym: str, tf: str, rows: list[dict[str, Any]], expected: list[Any]) -> None:
    close = np.array([float(r[4]) for r in expected[: len(rows)]])
    macd, signal, _ = talib.MACD(close, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0)  # matype SMA, the default
    ref = {
        "rsi_14": talib.RSI(close, 14),
        "macd": macd,
        "macd_signal": signal,
        "bollinger_upper": upper,
        "bollinger_middle": middle,
        "bollinger_lower": lower,
        "ema_20": talib.EMA(close, 20),
        "sma_50": talib.SMA(close, 50),
    }
    for i, d in enumerate(rows):
        ind = d["indicators"]
        for name, series in ref.items():
            v = ind[name]
            got = float(v.to_decimal()) if isinstance(v, Decimal128) else v
            scale = 1.0 if name == "rsi_14" else abs(close[i])
            assert _close(got, float(series[i]), scale), (sym, tf, i, name, got, series[i])


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

"""Documents as the schema spec says them, written to a real wire-protocol server exactly once."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from bson import Decimal128
from pymongo import AsyncMongoClient

from ingestor.candles import Candles
from ingestor.store.documents import decimal15, to_documents
from ingestor.store.schema import MARKET_DATA, ensure_schema
from ingestor.store.writer import CandleStore
from ingestor.streams import StreamKey

M = 60_000
KEYS = [StreamKey("ADABTC", "1m"), StreamKey("BTCUSDT", "1h")]


def _candles(n: int, sid: int = 0, start: int = 1_700_000_000_000 // M * M) -> Candles:
    rows = [
        [
            start + i * M,
            "0.00002850",
            "0.00002861",
            "0.00002845",
            f"0.0000285{i % 10}",
            "9999999.99999999",
            start + i * M + M - 1,
            "0.00000000",
            i,
            "0",
            "1E-8",
        ]
        for i in range(n)
    ]
    c = Candles.from_rows([sid] * n, rows)
    ind = np.full((n, 8), np.nan)
    ind[n // 2 :] = [
        55.5,
        1.25e-9,
        -3.5e-10,
        2.85123456789012345e-5,
        2.85e-5,
        2.84e-5,
        2.8512e-5,
        2.85e-5,
    ]
    c.indicators = ind
    return c


def test_documents_follow_the_spec() -> None:
    c = _candles(4)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    docs = to_documents(c, KEYS, now)
    d = docs[3]
    assert list(d) == [
        "symbol",
        "timeframe",
        "open_time",
        "close_time",
        "open_price",
        "high_price",
        "low_price",
        "close_price",
        "volume",
        "quote_volume",
        "trades_count",
        "taker_buy_base_volume",
        "taker_buy_quote_volume",
        "indicators",
        "created_at",
        "source",
    ]
    assert d["symbol"] == "ADABTC" and d["timeframe"] == "1m" and d["source"] == "binance"
    assert d["open_price"] == Decimal128("0.00002850")
    assert str(d["close_price"]) == "0.00002853"  # the exchange's string, trailing zeros kept
    assert str(d["volume"]) == "9999999.99999999"
    assert d["quote_volume"].bid == Decimal128("0.00000000").bid  # exponent -8 kept
    assert d["open_time"] == datetime.fromtimestamp(int(c.open_time[3]) / 1000, UTC)
    assert (d["close_time"] - d["open_time"]).total_seconds() == 59.999
    assert d["trades_count"] == 3 and isinstance(d["trades_count"], int)
    ind = d["indicators"]
    assert ind["rsi_14"] == 55.5 and isinstance(ind["macd"], float)
    assert ind["bollinger_upper"] == Decimal128("0.0000285123456789012")
    assert docs[0]["indicators"] == dict.fromkeys(ind)  # null before the lookback


def test_decimal15_keeps_fifteen_significant_digits() -> None:
    assert decimal15(math.nan) is None
    assert str(decimal15(12345.678901234567)) == "12345.6789012346"
    tiny = decimal15(1.23456789012345e-8)
    assert tiny is not None
    assert tiny.to_decimal().as_tuple().digits == (
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        0,
        1,
        2,
        3,
        4,
        5,
    )


async def test_insert_roundtrip_and_dedupe_after_failure(mongo_uri: str, db_name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        db = client[db_name]
        await ensure_schema(db)
        await ensure_schema(db)  # idempotent
        info = await db.command("listCollections", filter={"name": MARKET_DATA})
        opts = info["cursor"]["firstBatch"][0]["options"]
        assert opts["timeseries"]["timeField"] == "open_time"
        assert opts["timeseries"]["metaField"] == "symbol"
        assert opts["expireAfterSeconds"] == 7_776_000
        store = CandleStore(db, KEYS)
        c = _candles(10)
        assert await store.insert(c.take(np.arange(6))) == 6
        # A retried batch that partly landed: only the missing candles go in.
        assert await store.existing(c) == {(0, int(t)) for t in c.open_time[:6]}
        states: list[bool] = []
        store2 = CandleStore(db, KEYS, on_state=states.append)
        assert await store2.insert(c, suspect=True) == 4
        assert states == [True]
        assert await db[MARKET_DATA].count_documents({}) == 10
        times, closes = await store.history(KEYS[0], 5)
        assert times.tolist() == c.open_time[5:].tolist()
        assert closes.tolist() == c.close_f[5:].tolist()
        doc = await db[MARKET_DATA].find_one(
            {"open_time": to_documents(c, KEYS, datetime.now(UTC))[9]["open_time"]}
        )
        assert doc is not None and str(doc["close_price"]) == "0.00002859"
        assert doc["indicators"]["bollinger_upper"] == Decimal128("0.0000285123456789012")
    finally:
        await client.drop_database(db_name)
        await client.close()

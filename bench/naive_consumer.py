"""The alternative a user would pick: websockets + json + a dict per kline + TA-Lib + insert_one.

Kept deliberately ordinary (what a tutorial does, issue 17's definition): ``json.loads`` per
frame; per closed kline a dict of ``Decimal128(str)`` and datetimes, the stream's window of its
last 500 closes run through TA-Lib (the daemon's eight stored indicators: RSI 14, MACD 12/26/9,
Bollinger 20/2, EMA 20, SMA 50), and one ``insert_one`` awaited in the read loop (database
sink), or PyMongo's own ``bson.encode`` of the document (null sink: the encoding
``insert_one`` would do, without the network). No journal, no exactly-once, no gap fills, no
warm-up: strictly less work per kline than the daemon's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import bson
import numpy as np
import talib
from bson import Decimal128
from pymongo import AsyncMongoClient
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from indicators import OUTPUT_FIELDS

__all__ = ["WINDOW", "NaiveConsumer", "kline_document"]

#: Closes per stream kept for the indicators (the daemon's default ``warmup_candles``).
WINDOW = 500


class NaiveConsumer:
    """``await NaiveConsumer(ws_url, names).run(seconds)`` -> counters."""

    def __init__(
        self,
        ws_url: str,
        stream_names: list[str],
        *,
        per_connection: int = 200,
        mongo_uri: str = "",
        database: str = "bench_naive",
    ) -> None:
        self.urls = [
            f"{ws_url}/stream?streams={'/'.join(stream_names[i : i + per_connection])}"
            for i in range(0, len(stream_names), per_connection)
        ]
        self.mongo_uri = mongo_uri
        self.database = database
        self.closes: dict[str, list[float]] = {}
        self.frames = 0
        self.stored = 0
        self.reconnects = 0
        self._client: AsyncMongoClient[dict[str, Any]] | None = None

    async def _read(self, url: str) -> None:
        while True:
            try:
                async with connect(url, max_size=2**22) as ws:
                    async for msg in ws:
                        self.frames += 1
                        data = json.loads(msg)["data"]
                        k = data["k"]
                        if k["x"]:
                            await self._store(data["s"], k)
            except (OSError, WebSocketException):
                self.reconnects += 1

    async def _store(self, symbol: str, k: dict[str, Any]) -> None:
        doc = kline_document(symbol, k)
        window = self.closes.setdefault(f"{symbol}@{k['i']}", [])
        window.append(float(k["c"]))
        del window[:-WINDOW]
        doc["indicators"] = _indicators(np.array(window))
        if self._client is None:
            bson.encode(doc)  # what insert_one does to the dict
        else:
            await self._client[self.database]["market_data"].insert_one(doc)
        self.stored += 1

    async def run(self, seconds: float, *, warmup: float = 0.0) -> dict[str, Any]:
        """Consume for ``warmup`` + ``seconds``; the figures cover the last ``seconds``."""
        if self.mongo_uri:
            # The spec's time-series collection, as the daemon has it; default write concern.
            from ingestor.store.schema import ensure_schema

            self._client = AsyncMongoClient(self.mongo_uri)
            await self._client.drop_database(self.database)
            await ensure_schema(self._client[self.database])
        tasks = [asyncio.create_task(self._read(u)) for u in self.urls]
        await asyncio.sleep(warmup)
        cpu0, t0 = time.process_time(), time.perf_counter()
        stored0 = self.stored
        await asyncio.sleep(seconds)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        stored = self.stored - stored0
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._client is not None:
            await self._client.drop_database(self.database)
            await self._client.close()
        return {
            "klines": stored,
            "frames": self.frames,
            "seconds": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "reconnects": self.reconnects,
        }


def kline_document(symbol: str, k: dict[str, Any]) -> dict[str, Any]:
    """The spec's document of one kline payload, as a tutorial builds it (indicators unset)."""
    return {
        "symbol": symbol,
        "timeframe": k["i"],
        "open_time": datetime.fromtimestamp(k["t"] / 1000, UTC),
        "close_time": datetime.fromtimestamp(k["T"] / 1000, UTC),
        "open_price": Decimal128(k["o"]),
        "high_price": Decimal128(k["h"]),
        "low_price": Decimal128(k["l"]),
        "close_price": Decimal128(k["c"]),
        "volume": Decimal128(k["v"]),
        "quote_volume": Decimal128(k["q"]),
        "trades_count": k["n"],
        "taker_buy_base_volume": Decimal128(k["V"]),
        "taker_buy_quote_volume": Decimal128(k["Q"]),
        "indicators": dict.fromkeys(OUTPUT_FIELDS),  # filled by _indicators
        "created_at": datetime.now(UTC),
        "source": "binance",
    }


def _indicators(closes: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, float | None]:
    """The newest value of each stored indicator over the window (None before its lookback)."""
    macd, signal, _ = talib.MACD(closes, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(closes, 20, 2.0, 2.0, 0)  # type: ignore[arg-type]
    values = (
        talib.RSI(closes, 14),
        macd,
        signal,
        upper,
        middle,
        lower,
        talib.EMA(closes, 20),
        talib.SMA(closes, 50),
    )
    out: dict[str, float | None] = {}
    for name, series in zip(OUTPUT_FIELDS, values, strict=True):
        v = float(series[-1])
        out[name] = None if v != v else v
    return out

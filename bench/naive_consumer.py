"""The alternative a user would pick: plain websockets + json + a dict per kline + insert_many.

Kept deliberately ordinary (what a tutorial does): ``json.loads`` per frame, a dict of
``Decimal128(str)`` and datetimes per closed kline, a list flushed at 1,000 documents or every
200 ms, ``insert_many`` (database sink) or PyMongo's own per-document ``bson.encode`` (null
sink: the encoding ``insert_many`` would do, without the network). It computes no indicators
(they are stored as nulls), so it does strictly less work than the daemon's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import bson
from bson import Decimal128
from pymongo import AsyncMongoClient
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from indicators import OUTPUT_FIELDS

__all__ = ["NaiveConsumer"]


class NaiveConsumer:
    """``await NaiveConsumer(ws_url, names).run(seconds)`` -> counters."""

    def __init__(
        self,
        ws_url: str,
        stream_names: list[str],
        *,
        per_connection: int = 200,
        batch: int = 1000,
        mongo_uri: str = "",
        database: str = "bench_naive",
    ) -> None:
        self.urls = [
            f"{ws_url}/stream?streams={'/'.join(stream_names[i : i + per_connection])}"
            for i in range(0, len(stream_names), per_connection)
        ]
        self.batch = batch
        self.mongo_uri = mongo_uri
        self.database = database
        self.docs: list[dict[str, Any]] = []
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
                            self.docs.append(_document(data["s"], k))
                            if len(self.docs) >= self.batch:
                                await self._flush()
            except (OSError, WebSocketException):
                self.reconnects += 1

    async def _flush(self) -> None:
        docs, self.docs = self.docs, []
        if not docs:
            return
        if self._client is None:
            for d in docs:
                bson.encode(d)  # what insert_many does to each dict
        else:
            await self._client[self.database]["market_data"].insert_many(docs, ordered=False)
        self.stored += len(docs)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._flush()

    async def run(self, seconds: float) -> dict[str, Any]:
        if self.mongo_uri:
            # The spec's time-series collection, as the daemon has it; default write concern.
            from ingestor.store.schema import ensure_schema

            self._client = AsyncMongoClient(self.mongo_uri)
            await self._client.drop_database(self.database)
            await ensure_schema(self._client[self.database])
        tasks = [asyncio.create_task(self._read(u)) for u in self.urls]
        tasks.append(asyncio.create_task(self._flusher()))
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


def _document(symbol: str, k: dict[str, Any]) -> dict[str, Any]:
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
        "indicators": dict.fromkeys(OUTPUT_FIELDS),
        "created_at": datetime.now(UTC),
        "source": "binance",
    }

"""Bulk inserts into ``market_data`` that never store a candle twice.

Time-series collections cannot carry a unique index, so uniqueness is the writer's job: the
in-memory watermark (upstream) keeps repeats out on the normal path, and after any failed or
half-acknowledged ``insert_many`` the retry first asks the database which of the batch's candles
it already holds (one indexed query per stream) and inserts only the rest.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from bson import Decimal128
from pymongo import WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from ingestor.candles import Candles
from ingestor.store.bson_encode import BsonEncoder
from ingestor.store.documents import datetime_to_ms, ms_to_datetime
from ingestor.store.schema import MARKET_DATA
from ingestor.streams import StreamKey

__all__ = ["CandleStore"]

log = logging.getLogger(__name__)


class CandleStore:
    """Reads watermarks and history, writes batches; retries until the database takes them."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        keys: list[StreamKey],
        *,
        backoff_cap_s: float = 5.0,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        # j=True: an acknowledged batch is in the server's journal, so it survives a server
        # crash; only then is it dropped from our own journal.
        self._coll = db[MARKET_DATA].with_options(write_concern=WriteConcern(w=1, j=True))
        self._keys = keys
        self._encoder = BsonEncoder(keys)
        self._backoff_cap_s = backoff_cap_s
        self._on_state = on_state or (lambda ok: None)

    async def history(
        self, key: StreamKey, n: int, before_ms: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The stream's last ``n`` stored open times (ms) and closes, oldest first (only those
        opening at or before ``before_ms`` when given)."""
        query: dict[str, Any] = {"symbol": key.symbol, "timeframe": key.timeframe}
        if before_ms is not None:
            query["open_time"] = {"$lte": ms_to_datetime(before_ms)}
        cursor = (
            self._coll.find(
                query,
                {"_id": 0, "open_time": 1, "close_price": 1},
            )
            .sort("open_time", -1)
            .limit(n)
        )
        times: list[int] = []
        closes: list[float] = []
        async for doc in cursor:
            times.append(datetime_to_ms(doc["open_time"]))
            cp = doc["close_price"]
            closes.append(float(cp.to_decimal()) if isinstance(cp, Decimal128) else float(cp))
        return np.array(times[::-1], dtype=np.int64), np.array(closes[::-1], dtype=np.float64)

    async def first_open(self, key: StreamKey) -> int:
        """Open time (ms) of the stream's oldest stored candle, or -1."""
        doc = await self._coll.find_one(
            {"symbol": key.symbol, "timeframe": key.timeframe},
            {"_id": 0, "open_time": 1},
            sort=[("open_time", 1)],
        )
        return -1 if doc is None else datetime_to_ms(doc["open_time"])

    async def existing(self, candles: Candles) -> set[tuple[int, int]]:
        """(stream_id, open_time) pairs of ``candles`` that the database already holds."""
        found: set[tuple[int, int]] = set()
        for sid in np.unique(candles.stream_id).tolist():
            times = candles.open_time[candles.stream_id == sid]
            key = self._keys[sid]
            query = {
                "symbol": key.symbol,
                "timeframe": key.timeframe,
                "open_time": {
                    "$gte": ms_to_datetime(int(times.min())),
                    "$lte": ms_to_datetime(int(times.max())),
                },
            }
            async for doc in self._coll.find(query, {"_id": 0, "open_time": 1}):
                found.add((sid, datetime_to_ms(doc["open_time"])))
        return found

    async def insert(self, candles: Candles, *, suspect: bool = False) -> int:
        """Store the batch exactly once; returns how many documents were inserted.

        ``suspect``: part of the batch may already be stored (journal replay after a crash); a
        failed attempt makes every retry suspect too.
        """
        attempt = 0
        while True:
            try:
                todo = candles
                if suspect:
                    have = await self.existing(candles)
                    if have:
                        keep = np.array(
                            [
                                (s, t) not in have
                                for s, t in zip(
                                    candles.stream_id.tolist(),
                                    candles.open_time.tolist(),
                                    strict=True,
                                )
                            ],
                            dtype=bool,
                        )
                        todo = candles.take(keep)
                if len(todo):
                    # Raw BSON (to_documents' encoding, byte for byte), sent as it is.
                    docs = self._encoder.encode(todo, time.time_ns() // 1_000_000)
                    await self._coll.insert_many(docs, ordered=False)
                if attempt:
                    log.info("database write recovered after %d retries", attempt)
                self._on_state(True)
                return len(todo)
            except BulkWriteError as exc:
                # Some documents may be in; the retry re-checks which.
                log.warning("insert_many partly failed: %s", exc.details.get("writeErrors", [])[:1])
                suspect = True
            except PyMongoError as exc:
                if attempt == 0:
                    log.warning("database write failed (%s: %s); retrying", type(exc).__name__, exc)
                suspect = True
            self._on_state(False)
            attempt += 1
            delay = min(self._backoff_cap_s, 0.1 * 2 ** min(attempt, 10))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

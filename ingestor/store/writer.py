"""Bulk inserts into ``market_data`` that never store a candle twice.

Time-series collections cannot carry a unique index, so uniqueness is the writer's job: the
in-memory watermark (upstream) keeps repeats out on the normal path, and after any failed or
half-acknowledged ``insert_many`` the retry first asks the database which of the batch's candles
it already holds (one indexed query per stream, on the primary) and inserts only the rest.

Durability (``store.concerns``): ``{w: majority, j: true}``, so a batch leaves the journal only
once no failover can roll it back; a candle the re-query finds but a majority does not yet hold
is not taken as stored (the write is retried until it is). Failures follow ``ingestor.retry``:
transient ones are retried with its backoff, permanent ones (no insert right, a validator
refusing the documents) are reported once and re-checked slowly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from bson import Decimal128
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from ingestor.candles import Candles
from ingestor.failures import Failures
from ingestor.retry import RECHECK_S, Backoff, classify
from ingestor.store.bson_encode import BsonEncoder
from ingestor.store.concerns import committed_reads, deciding_reads, durable
from ingestor.store.documents import datetime_to_ms, ms_to_datetime
from ingestor.store.schema import MARKET_DATA
from ingestor.streams import StreamKey

__all__ = ["DATABASE", "CandleStore"]

#: The component name under which database failures are reported.
DATABASE = "database"

log = logging.getLogger(__name__)


class CandleStore:
    """Reads watermarks and history (from the primary: they decide what is fetched and
    inserted), writes batches; retries until the database takes them."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        keys: list[StreamKey],
        *,
        backoff_cap_s: float = 5.0,
        on_state: Callable[[bool], None] | None = None,
        failures: Failures | None = None,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self._coll = durable(db[MARKET_DATA])
        self._deciding = deciding_reads(db[MARKET_DATA])
        self._committed = committed_reads(db[MARKET_DATA])
        self._keys = keys
        self._encoder = BsonEncoder(keys)
        self._backoff = Backoff(base_s=0.1, cap_s=backoff_cap_s)
        self._on_state = on_state or (lambda ok: None)
        self.failures = failures if failures is not None else Failures()
        self._recheck_s = recheck_s

    async def history(
        self, key: StreamKey, n: int, before_ms: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The stream's last ``n`` stored open times (ms) and closes, oldest first (only those
        opening at or before ``before_ms`` when given)."""
        query: dict[str, Any] = {"symbol": key.symbol, "timeframe": key.timeframe}
        if before_ms is not None:
            query["open_time"] = {"$lte": ms_to_datetime(before_ms)}
        cursor = (
            self._deciding.find(
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
        doc = await self._deciding.find_one(
            {"symbol": key.symbol, "timeframe": key.timeframe},
            {"_id": 0, "open_time": 1},
            sort=[("open_time", 1)],
        )
        return -1 if doc is None else datetime_to_ms(doc["open_time"])

    async def existing(self, candles: Candles, *, committed: bool = False) -> set[tuple[int, int]]:
        """(stream_id, open_time) pairs of ``candles`` that the primary already holds
        (``committed``: that a majority holds)."""
        coll = self._committed if committed else self._deciding
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
            async for doc in coll.find(query, {"_id": 0, "open_time": 1}):
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
                    if have and not have <= await self.existing(candles, committed=True):
                        # On the primary but not yet on a majority: a failover could still
                        # roll it back, so the batch is not stored yet. Wait and look again.
                        raise _NotCommitted
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
                self._backoff.reset()
                self.failures.clear(DATABASE)
                self._on_state(True)
                return len(todo)
            except _NotCommitted:
                if attempt == 0:
                    log.info("stored candles not yet majority-committed; waiting")
                delay = self._backoff.next_delay()
            except PyMongoError as exc:
                verdict = classify(exc)
                suspect = True  # some documents may be in; the retry re-checks which
                if verdict.permanent:
                    self.failures.report(DATABASE, verdict, "the batch stays journaled")
                    delay = self._recheck_s
                else:
                    if attempt == 0:
                        log.warning("database write failed (%s); retrying", verdict)
                    delay = self._backoff.next_delay()
            self._on_state(False)
            attempt += 1
            await asyncio.sleep(delay)


class _NotCommitted(Exception):
    """Found on the primary, not yet on a majority (internal to :meth:`CandleStore.insert`)."""

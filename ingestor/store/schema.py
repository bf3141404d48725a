"""The collections the daemon writes, created as the schema spec defines them.

``market_data`` is a time-series collection (timeField ``open_time``, metaField ``symbol``,
granularity ``minutes``). The spec also lists a TTL index on ``open_time``; MongoDB does not allow
a TTL index on the time field of a time-series collection, so the 90-day retention is the
collection's ``expireAfterSeconds`` option instead.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

__all__ = [
    "MARKET_DATA",
    "MARKET_DATA_INDEXES",
    "MARKET_DATA_TTL_S",
    "REJECTS",
    "REJECTS_TTL_S",
    "ensure_schema",
]

MARKET_DATA = "market_data"
MARKET_DATA_TTL_S = 7_776_000  # 90 days
MARKET_DATA_INDEXES: tuple[list[tuple[str, int]], ...] = (
    [("symbol", 1), ("timeframe", 1), ("open_time", -1)],
    [("symbol", 1), ("timeframe", 1), ("close_time", -1)],
)
REJECTS = "market_data_rejects"
REJECTS_TTL_S = 7 * 86_400


async def ensure_schema(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Create what is missing; never alters or drops what exists."""
    names = set(await db.list_collection_names())
    if MARKET_DATA not in names:
        await db.create_collection(
            MARKET_DATA,
            timeseries={"timeField": "open_time", "metaField": "symbol", "granularity": "minutes"},
            expireAfterSeconds=MARKET_DATA_TTL_S,
        )
    for keys in MARKET_DATA_INDEXES:
        await db[MARKET_DATA].create_index(keys)
    if REJECTS not in names:
        await db.create_collection(REJECTS)
    await db[REJECTS].create_index([("received_at", 1)], expireAfterSeconds=REJECTS_TTL_S)
    await db[REJECTS].create_index([("reason", 1), ("received_at", -1)])

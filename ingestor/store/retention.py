"""How long ``market_data`` keeps a candle, and who deletes it when that has passed.

The retention is the collection's own ``expireAfterSeconds`` (read from the database, so an
operator's ``collMod`` is honoured): a candle whose ``open_time`` is older than now minus it is
never stored. MongoDB deletes expired time-series documents itself. SecantusDB (the embedded
server) does not enforce ``expireAfterSeconds`` on a time-series collection, so there the daemon
deletes them: :class:`Expirer`, at most once a minute, one ``delete_many`` served by the index
``{symbol, timeframe, open_time}``. Which server does what is the config's
``mongodb.expiry``: ``"auto"`` (default) means the daemon deletes when ``mongodb.uri`` is empty
(the embedded server) and leaves it to the server otherwise; ``"daemon"`` or ``"server"`` say
so explicitly (``"daemon"`` for a SecantusDB of your own).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from ingestor.store.documents import ms_to_datetime
from ingestor.store.schema import MARKET_DATA, MARKET_DATA_TTL_S
from ingestor.streams import StreamKey

__all__ = ["EXPIRE_EVERY_S", "Expirer", "Retention", "daemon_expires", "read_retention"]

log = logging.getLogger(__name__)

#: Seconds between two deletes of expired candles (at most once a minute).
EXPIRE_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Retention:
    """``market_data``'s ``expireAfterSeconds`` (None: kept forever); times by the wall clock,
    as the server expires them."""

    expire_after_s: int | None

    def cutoff_ms(self, now_ms: int | None = None) -> int:
        """Open times before this are already past the retention (never stored)."""
        if self.expire_after_s is None:
            return -(1 << 62)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now - self.expire_after_s * 1000


def daemon_expires(expiry: str, uri: str) -> bool:
    """Whether the daemon deletes expired candles itself (``mongodb.expiry``, see above)."""
    return expiry == "daemon" or (expiry == "auto" and not uri)


async def read_retention(db: AsyncDatabase[dict[str, Any]]) -> Retention:
    """``market_data``'s ``expireAfterSeconds``, as the database has it (the schema spec's when
    the collection does not exist yet: it is created with that); None when it has none."""
    async for info in await db.list_collections(filter={"name": MARKET_DATA}):
        ttl = info.get("options", {}).get("expireAfterSeconds")
        if isinstance(ttl, int | float) and not isinstance(ttl, bool):
            return Retention(int(ttl))
        return Retention(None)
    return Retention(MARKET_DATA_TTL_S or None)


class Expirer:
    """Deletes the streams' candles that passed the retention, at most every ``every_s``."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        keys: list[StreamKey],
        retention: Retention,
        every_s: float = EXPIRE_EVERY_S,
        on_deleted: Callable[[int], None] | None = None,
        on_failed: Callable[[], None] | None = None,
    ) -> None:
        self._coll = db[MARKET_DATA]
        self._symbols = sorted({k.symbol for k in keys})
        self._timeframes = sorted({k.timeframe for k in keys})
        self.retention = retention
        self.every_s = every_s
        self._on_deleted = on_deleted or (lambda n: None)
        self._on_failed = on_failed or (lambda: None)

    async def expire_once(self) -> int:
        """One indexed ``delete_many`` of every expired candle of the streams."""
        cutoff = ms_to_datetime(self.retention.cutoff_ms())
        result = await self._coll.delete_many(
            {
                "symbol": {"$in": self._symbols},
                "timeframe": {"$in": self._timeframes},
                "open_time": {"$lt": cutoff},
            }
        )
        self._on_deleted(result.deleted_count)
        if result.deleted_count:
            log.info("deleted %d candles past the retention", result.deleted_count)
        return int(result.deleted_count)

    async def run(self) -> None:
        """Forever: delete, then wait ``every_s``; a failed delete is logged and retried then."""
        if self.retention.expire_after_s is None:
            return
        while True:
            try:
                await self.expire_once()
            except PyMongoError as exc:  # a database outage: the next round retries
                self._on_failed()
                log.warning("could not delete expired candles (%s); retrying later", exc)
            await asyncio.sleep(self.every_s)

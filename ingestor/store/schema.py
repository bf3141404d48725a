"""The collections the daemon touches, made as the schema spec says (``ingestor.schema``).

At startup :func:`ensure_schema` runs ``ingestor schema apply`` (without ``--migrate``) for the
daemon's collections: what is missing is created with its indexes, options and validator; what
exists but differs is logged as drift and left alone. ``market_data`` is time-series; the spec's
TTL index on ``open_time`` becomes the collection's ``expireAfterSeconds`` (MongoDB allows no TTL
index on a time-series collection's time field).
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ingestor.schema.apply import apply
from ingestor.schema.spec import by_name, realize

__all__ = [
    "DAEMON_COLLECTIONS",
    "MARKET_DATA",
    "MARKET_DATA_INDEXES",
    "MARKET_DATA_TTL_S",
    "REJECTS",
    "REJECTS_TTL_S",
    "ensure_schema",
]

log = logging.getLogger(__name__)

MARKET_DATA = "market_data"
REJECTS = "market_data_rejects"
MARKET_DATA_TTL_S: int = realize(by_name(MARKET_DATA)).expire_after_s or 0
MARKET_DATA_INDEXES: tuple[list[tuple[str, int]], ...] = tuple(
    list(ix.keys) for ix in realize(by_name(MARKET_DATA)).indexes
)
REJECTS_TTL_S: int = next(
    ix.expire_after_s for ix in by_name(REJECTS).indexes if ix.expire_after_s is not None
)
#: What the daemon reads or writes: candles, rejects, and (positions loop) positions,
#: margin notifications and their audit log entries.
DAEMON_COLLECTIONS = (MARKET_DATA, REJECTS, "positions", "notifications", "audit_logs")


async def ensure_schema(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Create what is missing; never alters or drops what exists (drift is logged)."""
    report = await apply(db, DAEMON_COLLECTIONS)
    for change in report.changes:
        log.info("schema: %s", change)
    for drift in report.pending:
        log.warning("schema drift (see `ingestor schema verify`): %s", drift)

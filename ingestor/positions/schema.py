"""Indexes the positions loop relies on, as the schema spec defines them, plus its own two.

``positions`` belongs to the trading platform; the loop only makes sure the spec's indexes exist
(the per-symbol update needs ``{symbol, opened_at}``) and adds a sparse index on the pending
alert mark, so finding the positions that just crossed is an index scan of those few, not of
every position. An index that already exists with other options is left alone (logged).
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from ingestor.positions.pipeline import PENDING_FIELD, SYMBOL_INDEX

__all__ = [
    "AUDIT_LOGS",
    "AUDIT_LOGS_TTL_S",
    "NOTIFICATIONS",
    "NOTIFICATIONS_TTL_S",
    "POSITIONS",
    "ensure_positions_schema",
]

log = logging.getLogger(__name__)

POSITIONS = "positions"
NOTIFICATIONS = "notifications"
AUDIT_LOGS = "audit_logs"
NOTIFICATIONS_TTL_S = 7 * 86_400
AUDIT_LOGS_TTL_S = 15_552_000  # 180 days

_Index = tuple[list[tuple[str, int]], dict[str, Any]]
_INDEXES: dict[str, tuple[_Index, ...]] = {
    POSITIONS: (
        ([("user_id", ASCENDING), ("symbol", ASCENDING)], {}),
        (list(SYMBOL_INDEX.items()), {}),
        ([("margin_ratio", ASCENDING)], {}),
        ([("updated_at", DESCENDING)], {}),
        ([(PENDING_FIELD, ASCENDING)], {"sparse": True}),
    ),
    NOTIFICATIONS: (
        ([("user_id", ASCENDING), ("read", ASCENDING), ("created_at", DESCENDING)], {}),
        ([("created_at", ASCENDING)], {"expireAfterSeconds": NOTIFICATIONS_TTL_S}),
    ),
    AUDIT_LOGS: (
        ([("user_id", ASCENDING), ("timestamp", DESCENDING)], {}),
        ([("action", ASCENDING), ("timestamp", DESCENDING)], {}),
        ([("resource", ASCENDING), ("resource_id", ASCENDING)], {}),
        ([("ip_address", ASCENDING)], {}),
        ([("timestamp", DESCENDING)], {}),
        ([("created_at", ASCENDING)], {"expireAfterSeconds": AUDIT_LOGS_TTL_S}),
    ),
}
_CONFLICT_CODES = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict


async def ensure_positions_schema(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Create the missing indexes; never alters or drops what exists."""
    for coll, indexes in _INDEXES.items():
        for keys, options in indexes:
            try:
                await db[coll].create_index(keys, **options)
            except OperationFailure as exc:
                if exc.code not in _CONFLICT_CODES:
                    raise
                log.warning("%s: keeping the existing index on %s (%s)", coll, keys, exc)

"""Margin alerts as documents: one ``notifications`` entry and one ``audit_logs`` entry per
crossing (pure builders, no I/O).

Both ``_id``s are derived from (position ``_id``, crossing tick id), so writing the same crossing
twice (a retry, or a restart between the insert and the clearing of the pending mark) hits the
``_id`` unique index instead of alerting twice. The first 4 bytes are the tick's own timestamp,
so the ids still sort and read as the crossing time, like any ObjectId.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import bson
from bson import ObjectId

__all__ = ["AUDIT_ACTION", "NOTIFICATION_TYPE", "alert_documents", "derived_id", "severity"]

NOTIFICATION_TYPE = "margin_alert"
AUDIT_ACTION = "MARGIN_ALERT"
#: Below this margin ratio the equity is under the maintenance margin: liquidation territory.
CRITICAL_BELOW = 1.0


def derived_id(kind: str, position_id: Any, tick: ObjectId) -> ObjectId:
    """A stable ObjectId for (kind, position, tick): tick's timestamp + 8 hash bytes."""
    digest = hashlib.blake2b(
        kind.encode() + bson.encode({"p": position_id}) + tick.binary, digest_size=8
    ).digest()
    return ObjectId(tick.binary[:4] + digest)


def severity(margin_ratio: float) -> str:
    return "critical" if margin_ratio < CRITICAL_BELOW else "warning"


def alert_documents(
    position: dict[str, Any], now: datetime, alert_below: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(notification, audit log) for a position carrying a pending crossing mark."""
    tick: ObjectId = position["margin_alert_pending"]
    ratio = float(position["margin_ratio"])
    symbol, side = position.get("symbol"), position.get("side")
    price = position.get("current_price")
    level = severity(ratio)
    notification = {
        "_id": derived_id("notification", position["_id"], tick),
        "user_id": position.get("user_id"),
        "type": NOTIFICATION_TYPE,
        "severity": level,
        "title": f"Margin alert: {symbol} {side}",
        "message": (
            f"Margin ratio of your {symbol} {side} position fell to {ratio:.4g} "
            f"(alert below {alert_below:g}) at price {price}."
        ),
        "position_id": position["_id"],
        "symbol": symbol,
        "side": side,
        "margin_ratio": ratio,
        "threshold": alert_below,
        "current_price": price,
        "created_at": now,
        "read": False,
    }
    audit = {
        "_id": derived_id("audit", position["_id"], tick),
        "user_id": None,
        "action": AUDIT_ACTION,
        "resource": "position",
        "resource_id": str(position["_id"]),
        "method": None,
        "endpoint": None,
        "ip_address": "",
        "user_agent": None,
        "status": "SUCCESS",
        "error_message": None,
        "metadata": {
            "owner_id": position.get("user_id"),
            "notification_id": notification["_id"],
            "symbol": symbol,
            "side": side,
            "margin_ratio": ratio,
            "threshold": alert_below,
            "severity": level,
            "current_price": str(price),
            "tick_id": tick,
        },
        "timestamp": now,
        "created_at": now,
    }
    return notification, audit

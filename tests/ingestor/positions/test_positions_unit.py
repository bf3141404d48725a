"""The pure parts: alert documents and their ids, the filter/census tables, the documentation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bson import Decimal128, ObjectId

import ingestor.positions as positions
from ingestor.positions import alerts, pipeline
from ingestor.positions.alerts import alert_documents, derived_id, severity
from ingestor.positions.pipeline import (
    REASONS,
    census_pipeline,
    pending_filter,
    refresh_filter,
    refresh_pipeline,
    valid_conditions,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_derived_ids_are_stable_distinct_and_carry_the_tick_time() -> None:
    pos, tick = ObjectId(), ObjectId()
    a = derived_id("notification", pos, tick)
    assert a == derived_id("notification", pos, tick)
    others = {
        derived_id("audit", pos, tick),
        derived_id("notification", ObjectId(), tick),
        derived_id("notification", pos, ObjectId()),
        derived_id("notification", "pos-1", tick),  # a non-ObjectId _id works too
    }
    assert a not in others and len(others) == 4
    assert a.generation_time == tick.generation_time


@pytest.mark.parametrize(
    ("ratio", "level"),
    [(1.49, "warning"), (1.0, "warning"), (0.99, "critical"), (-3.0, "critical")],
)
def test_severity(ratio: float, level: str) -> None:
    assert severity(ratio) == level


def test_alert_documents() -> None:
    tick = ObjectId()
    pos: dict[str, Any] = {
        "_id": ObjectId(),
        "user_id": ObjectId(),
        "symbol": "ETHUSDT",
        "side": "SHORT",
        "current_price": Decimal128("2500.5"),
        "margin_ratio": 1.2345,
        "margin_alert_pending": tick,
    }
    note, audit = alert_documents(pos, NOW, 1.5)
    assert note == {
        "_id": derived_id("notification", pos["_id"], tick),
        "user_id": pos["user_id"],
        "type": "margin_alert",
        "severity": "warning",
        "title": "Margin alert: ETHUSDT SHORT",
        "message": "Margin ratio of your ETHUSDT SHORT position fell to 1.234 (alert below 1.5) "
        "at price 2500.5.",
        "position_id": pos["_id"],
        "symbol": "ETHUSDT",
        "side": "SHORT",
        "margin_ratio": 1.2345,
        "threshold": 1.5,
        "current_price": Decimal128("2500.5"),
        "created_at": NOW,
        "read": False,
    }
    spec_fields = {
        "_id",
        "user_id",
        "action",
        "resource",
        "resource_id",
        "method",
        "endpoint",
        "ip_address",
        "user_agent",
        "status",
        "error_message",
        "metadata",
        "timestamp",
        "created_at",
    }
    assert set(audit) == spec_fields
    assert audit["user_id"] is None and audit["resource_id"] == str(pos["_id"])
    assert audit["metadata"]["owner_id"] == pos["user_id"]
    assert audit["metadata"]["notification_id"] == note["_id"]
    assert audit["metadata"]["current_price"] == "2500.5"


def test_filter_and_census_agree() -> None:
    f = refresh_filter("BTCUSDT")
    assert f["symbol"] == "BTCUSDT" and f["$and"] == valid_conditions()
    match = census_pipeline({"ETHUSDT", "BTCUSDT"})[0]["$match"]
    assert match == {
        "symbol": {"$in": ["BTCUSDT", "ETHUSDT"]},
        "$nor": [{"$and": valid_conditions()}],
    }
    assert len(set(REASONS)) == len(REASONS)
    assert pending_filter(None) == {"margin_alert_pending": {"$gte": pipeline.MIN_OBJECT_ID}}
    assert pending_filter({"B", "A"})["symbol"] == {"$in": ["A", "B"]}


def test_every_field_the_pipeline_writes_is_documented() -> None:
    stages = refresh_pipeline(Decimal128("1"), NOW, ObjectId(), 1.5, 1.75)
    written = {k for st in stages for k in st["$set"]}
    doc = positions.__doc__ or ""
    assert written and all(name in doc for name in written), written
    assert all(reason.split("_")[0] in doc for reason in REASONS)


@pytest.mark.parametrize("module", [positions, alerts, pipeline])
def test_exports_exist(module: object) -> None:
    assert all(hasattr(module, name) for name in module.__all__)  # type: ignore[attr-defined]

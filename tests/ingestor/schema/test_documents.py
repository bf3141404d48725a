"""Documents against the applied schema on a real server: every example of the spec is accepted,
a document breaking each validation rule is rejected with code 121 (DocumentValidationFailure)."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import Binary, Decimal128, ObjectId
from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, WriteError

from ingestor.schema.apply import apply
from ingestor.schema.spec import iter_rules
from tests.ingestor.schema import specdoc

D = Decimal128
DELETE = object()
NOW = datetime(2025, 10, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def examples() -> dict[str, list[dict[str, Any]]]:
    """The spec's example documents (kept in tests/data; test_spec checks them against it)."""
    return specdoc.kept_examples()


@pytest.fixture(scope="module")
def db(mongo_uri: str) -> Iterator[Database[dict[str, Any]]]:
    """One database with the whole schema applied (rejected writes leave it unchanged)."""
    name = f"test_docs_{uuid.uuid4().hex[:10]}"

    async def _apply() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
        try:
            assert (await apply(client[name])).in_sync
        finally:
            await client.close()

    asyncio.run(_apply())
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


def _mutate(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["_id"] = ObjectId()
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return out


#: rule id -> breaches (changes to the collection's example document), each must be rejected.
RULE_BREACHES: dict[str, list[dict[str, Any]]] = {
    "users.email.format": [{"email": "not-an-email"}, {"email": "a b@c.d"}],
    "users.password_hash.min_length": [{"password_hash": "$2b$12$tooshort"}],
    "users.settings.max_positions.range": [
        {"settings.max_positions": 0},
        {"settings.max_positions": 11},
    ],
    "users.settings.default_quantity.range": [
        {"settings.default_quantity": 0},
        {"settings.default_quantity": -0.01},
    ],
    "trades.quantity.range": [{"quantity": D("0")}, {"quantity": D("-0.05")}],
    "trades.status.enum": [{"status": "DONE"}],
    "trades.pnl_percentage.range": [{"pnl_percentage": -100.01}],
    "trades.fees.range": [{"fees": D("-0.01")}],
    "trades.ai_confidence.range": [{"ai_confidence": 1.01}, {"ai_confidence": -0.1}],
    "positions.quantity.range": [{"quantity": D("0")}, {"quantity": D("-1")}],
    "positions.leverage.range": [{"leverage": 0}, {"leverage": 126}],
    "positions.liquidation_price.leveraged": [
        {"liquidation_price": None},
        {"liquidation_price": DELETE},
    ],
    "positions.metadata.risk_score.range": [{"metadata.risk_score": 1.5}],
    "ai_analysis_results.confidence.range": [{"confidence": 1.01}, {"confidence": -0.01}],
    "ai_analysis_results.risk_reward_ratio.range": [
        {"risk_reward_ratio": 0},
        {"risk_reward_ratio": -2.0},
    ],
    "ai_analysis_results.position_size.range": [{"position_size": 100.5}, {"position_size": -1}],
    "ai_analysis_results.signal_strength.enum": [{"signal_strength": "VERY_STRONG"}],
    "ai_analysis_results.market_analysis.trend_strength.range": [
        {"market_analysis.trend_strength": 101}
    ],
    "ai_analysis_results.market_analysis.volatility.range": [{"market_analysis.volatility": -1}],
    "ai_analysis_results.market_analysis.risk_score.range": [{"market_analysis.risk_score": 100.1}],
    "paper_trading_accounts.metrics.win_rate.range": [{"metrics.win_rate": 100.01}],
    "paper_trading_trades.leverage.range": [{"leverage": 0.5}, {"leverage": 200}],
}

#: Breaches of field types, required fields and enums (not written as rules in the spec).
TYPE_BREACHES: list[tuple[str, dict[str, Any]]] = [
    ("users", {"email": DELETE}),
    ("users", {"created_at": "2025-01-15T10:30:00Z"}),
    ("users", {"settings.risk_level": "Extreme"}),
    ("users", {"settings.notifications.email_alerts": "yes"}),
    ("users", {"full_name": 42}),
    ("trades", {"user_id": "507f1f77bcf86cd799439011"}),
    ("trades", {"price": 50000.0}),
    ("trades", {"metadata.ip_address": DELETE}),
    ("positions", {"margin_type": "CROSS"}),
    ("positions", {"entry_price": "50000.00"}),
    ("ai_analysis_results", {"market_analysis.support_levels": [50000.0]}),
    ("ai_analysis_results", {"performance.outcome": "DRAW"}),
    ("portfolio_snapshots", {"var_95": "320.00"}),
    ("portfolio_snapshots", {"snapshot_time": DELETE}),
    ("paper_trading_accounts", {"open_trade_ids": [1, 2]}),
    ("paper_trading_trades", {"close_reason": "PANIC"}),
    ("audit_logs", {"status": "OK"}),
    ("audit_logs", {"metadata": "not an object"}),
    ("system_config", {"value": DELETE}),
    ("system_config", {"is_active": "true"}),
]

#: Edge values that must be accepted (the bounds are not stricter than the spec).
ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("users", {"settings.max_positions": 1, "full_name": None, "last_login": DELETE}),
    ("users", {"settings.max_positions": 10}),
    ("trades", {"pnl_percentage": -100, "price": None, "ai_confidence": 1}),
    ("trades", {"fees": D("0"), "pnl_percentage": 1e9}),
    ("positions", {"leverage": 1, "liquidation_price": None}),
    ("positions", {"leverage": 125, "metadata.risk_score": 0}),
    ("ai_analysis_results", {"risk_reward_ratio": None, "position_size": 0, "confidence": 0}),
    ("system_config", {"value": {"nested": [1, "two"]}}),
]

#: Minimal documents for the brief collections (and the daemon's rejects).
MINIMAL: dict[str, dict[str, Any]] = {
    "paper_trading_settings": {"settings": {"max_leverage": 10}, "updated_at": NOW},
    "portfolio_history": {"account_id": ObjectId(), "timestamp": NOW, "equity": D("1")},
    "ai_signals": {"signal_id": "s1", "symbol": "BTCUSDT", "status": "EXECUTED", "created_at": NOW},
    "performance_metrics": {"user_id": ObjectId(), "date": NOW, "metrics": {"pnl": D("1")}},
    "notifications": {
        "user_id": None,
        "type": "margin_alert",
        "message": "margin ratio 1.4",
        "created_at": NOW,
    },
    "sessions": {"user_id": ObjectId(), "token_hash": "h1", "created_at": NOW, "expires_at": NOW},
    "api_keys": {
        "user_id": ObjectId(),
        "exchange": "binance",
        "api_key": "k",
        "api_secret_encrypted": Binary(b"\x00secret"),
        "created_at": NOW,
    },
    "market_data_rejects": {
        "raw": "{}",
        "reason": "bad_type",
        "detail": "",
        "stream": None,
        "received_at": NOW,
    },
}

MINIMAL_BREACHES: list[tuple[str, dict[str, Any]]] = [
    ("paper_trading_settings", {"settings": DELETE}),
    ("ai_signals", {"created_at": "now"}),
    ("performance_metrics", {"date": DELETE}),
    ("notifications", {"message": DELETE}),
    ("notifications", {"created_at": "2025-10-10"}),  # the TTL needs a date
    ("notifications", {"read": None}),
    ("sessions", {"expires_at": DELETE}),
    ("api_keys", {"api_secret_encrypted": "plaintext"}),
    ("market_data_rejects", {"received_at": DELETE}),
]


def _fresh(coll: str, doc: dict[str, Any]) -> dict[str, Any]:
    """New values for the fields of unique indexes, so a valid copy can be stored again."""
    tag = uuid.uuid4().hex[:8]
    by_coll: dict[str, dict[str, Any]] = {
        "users": {"email": f"{tag}@example.com"},
        "paper_trading_accounts": {"user_id": ObjectId()},
        "paper_trading_trades": {"trade_id": tag},
        "system_config": {"key": tag},
    }
    fresh = by_coll.get(coll, {})
    return {**doc, **fresh}


def _rejected(db: Database[dict[str, Any]], coll: str, doc: dict[str, Any]) -> None:
    with pytest.raises(WriteError) as info:
        db[coll].insert_one(doc)
    assert info.value.code == 121, info.value.details
    assert db[coll].count_documents({"_id": doc["_id"]}) == 0


def test_every_example_document_inserts(
    db: Database[dict[str, Any]], examples: dict[str, list[dict[str, Any]]]
) -> None:
    total = 0
    for coll, docs in examples.items():
        for doc in docs:
            db[coll].insert_one(copy.deepcopy(doc))
            stored = db[coll].find_one({"_id": doc["_id"]})
            assert stored == doc, coll
            total += 1
    assert total == 11  # system_config has two


def test_every_database_rule_has_a_breach() -> None:
    enforced = {r.id for _, r in iter_rules() if r.enforced_by == "database" and r.kind != "unique"}
    assert enforced == set(RULE_BREACHES)


@pytest.mark.parametrize("rule_id", sorted(RULE_BREACHES))
def test_a_document_breaking_a_rule_is_rejected(
    db: Database[dict[str, Any]], examples: dict[str, list[dict[str, Any]]], rule_id: str
) -> None:
    coll = rule_id.split(".")[0]
    for changes in RULE_BREACHES[rule_id]:
        _rejected(db, coll, _mutate(examples[coll][0], changes))


def test_type_and_required_breaches_are_rejected(
    db: Database[dict[str, Any]], examples: dict[str, list[dict[str, Any]]]
) -> None:
    for coll, changes in TYPE_BREACHES:
        _rejected(db, coll, _mutate(examples[coll][0], changes))


def test_edge_values_are_accepted(
    db: Database[dict[str, Any]], examples: dict[str, list[dict[str, Any]]]
) -> None:
    for coll, changes in ACCEPTED:
        doc = _fresh(coll, _mutate(examples[coll][0], changes))
        db[coll].insert_one(doc)
        assert db[coll].count_documents({"_id": doc["_id"]}) == 1


def test_updates_are_validated_too(
    db: Database[dict[str, Any]], examples: dict[str, list[dict[str, Any]]]
) -> None:
    doc = _fresh("positions", _mutate(examples["positions"][0], {}))
    db.positions.insert_one(doc)
    with pytest.raises(WriteError) as info:
        db.positions.update_one({"_id": doc["_id"]}, {"$set": {"quantity": D("-0.1")}})
    assert info.value.code == 121
    db.positions.update_one({"_id": doc["_id"]}, {"$set": {"current_price": D("51600.00")}})
    stored = db.positions.find_one({"_id": doc["_id"]})
    assert stored is not None and stored["current_price"] == D("51600.00")


def test_unique_indexes_reject_duplicates(
    db: Database[dict[str, Any]], examples: dict[str, list[dict[str, Any]]]
) -> None:
    for coll in ("users", "paper_trading_accounts", "paper_trading_trades", "system_config"):
        first = _fresh(coll, _mutate(examples[coll][0], {}))
        db[coll].insert_one(first)
        with pytest.raises(DuplicateKeyError):
            db[coll].insert_one(_mutate(first, {}))


def test_brief_collections_take_minimal_documents(db: Database[dict[str, Any]]) -> None:
    for coll, doc in MINIMAL.items():
        db[coll].insert_one(dict(doc))
        assert db[coll].count_documents({}) >= 1, coll
    for coll, changes in MINIMAL_BREACHES:
        _rejected(db, coll, _mutate(MINIMAL[coll], changes))

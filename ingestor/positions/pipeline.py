"""The refresh as server-side MongoDB documents: filter, update pipeline, malformed census.

Pure builders (no I/O): values in, BSON-ready dicts out. The update is an aggregation-pipeline
update so every position is recomputed by the server from its own fields in one ``update_many``
per symbol; the arithmetic is Decimal128 throughout (``$multiply``/``$subtract``/``$add``/
``$divide`` on Decimal128 operands stay Decimal128), only ``pnl_percentage`` and
``margin_ratio`` are converted to doubles, as the spec types them.

A position the update cannot compute is excluded by the filter (:func:`valid_conditions`), so
one bad document never makes the server fail the update of its neighbours; the census
(:func:`census_pipeline`) names why each excluded one was excluded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from bson import Decimal128, ObjectId

__all__ = [
    "ACTIVE_FIELD",
    "MIN_OBJECT_ID",
    "PENDING_FIELD",
    "REASONS",
    "SYMBOL_INDEX",
    "VALIDATOR_REASON",
    "census_pipeline",
    "pending_filter",
    "refresh_filter",
    "refresh_pipeline",
    "valid_conditions",
]

#: The spec's ``{symbol: 1, opened_at: -1}`` index, hinted by every per-symbol command: a
#: planner may otherwise scan the whole collection for a filter with many non-indexed fields
#: (SecantusDB does).
SYMBOL_INDEX: dict[str, int] = {"symbol": 1, "opened_at": -1}
ACTIVE_FIELD = "margin_alert_active"
PENDING_FIELD = "margin_alert_pending"
#: The smallest ObjectId: ``{PENDING_FIELD: {"$gte": MIN_OBJECT_ID}}`` is an index range scan
#: of the sparse pending index (``$exists`` is not, on every server).
MIN_OBJECT_ID = ObjectId("0" * 24)

_POSITIVE = ("entry_price", "quantity", "margin_used", "maintenance_margin")
_OPTIONAL_NUMBERS = (
    "total_fees",
    "realized_pnl",
    "metadata.max_favorable_excursion",
    "metadata.max_adverse_excursion",
)
_SIDES = ("LONG", "SHORT")


def _reasons() -> tuple[tuple[str, dict[str, Any], dict[str, Any]], ...]:
    """(reason, query condition that is *valid*, aggregation expression true when *invalid*),
    checked in this order; the first failing one names a malformed position."""
    out: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        (
            "side_invalid",
            {"side": {"$in": list(_SIDES)}},
            {"$not": [{"$in": ["$side", list(_SIDES)]}]},
        ),
    ]
    for f in _POSITIVE:
        out.append((f"{f}_missing", {}, {"$eq": [{"$type": f"${f}"}, "missing"]}))
        out.append((f"{f}_not_numeric", {}, {"$not": [{"$isNumber": f"${f}"}]}))
        # NaN compares below every number, so it lands here too.
        out.append(
            (
                f"{f}_not_positive",
                {f: {"$type": "number", "$gt": 0}},
                {"$not": [{"$gt": [f"${f}", 0]}]},
            )
        )
    out.append(
        (
            "metadata_not_object",
            {"$or": [{"metadata": None}, {"metadata": {"$type": "object"}}]},
            {"$not": [{"$in": [{"$type": "$metadata"}, ["missing", "null", "object"]]}]},
        )
    )
    for f in _OPTIONAL_NUMBERS:
        out.append(
            (
                f"{f}_not_numeric",
                {"$or": [{f: None}, {f: {"$type": "number"}}]},
                {
                    "$not": [
                        {
                            "$or": [
                                {"$isNumber": f"${f}"},
                                {"$in": [{"$type": f"${f}"}, ["missing", "null"]]},
                            ]
                        }
                    ]
                },
            )
        )
    return tuple(out)


_REASON_TABLE = _reasons()
VALIDATOR_REASON = "collection_validator"
#: Every reason code the census can report.
REASONS: tuple[str, ...] = (*(r for r, _, _ in _REASON_TABLE), VALIDATOR_REASON)


def valid_conditions() -> list[dict[str, Any]]:
    """Query conditions a position must meet to be refreshed (besides its symbol)."""
    return [cond for _, cond, _ in _REASON_TABLE if cond]


def _conditions(validator: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [*valid_conditions(), *([dict(validator)] if validator else [])]


def refresh_filter(symbol: str, validator: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The open, computable positions of ``symbol`` (the spec's positions hold open ones only).

    ``validator``: the collection's enforced validator (a query expression). A document it
    rejects would fail the whole ``update_many`` at that document, so it is filtered out too.
    """
    return {"symbol": symbol, "$and": _conditions(validator)}


def _zero_if_null(field: str) -> dict[str, Any]:
    return {"$ifNull": [f"${field}", Decimal128("0")]}


def refresh_pipeline(
    price: Decimal128,
    now: datetime,
    tick: ObjectId,
    alert_below: float,
    recover_above: float,
) -> list[dict[str, Any]]:
    """The update pipeline of one symbol at ``price`` (stages see the previous stage's fields).

    unrealized = s * (price - entry) * quantity - fees  (s = +1 LONG, -1 SHORT)
    total = unrealized + realized; pnl_percentage = total * 100 / margin_used (double)
    margin_ratio = (margin_used + unrealized) / maintenance_margin (double)
    excursions only widen; a crossing below ``alert_below`` while not active sets
    ``margin_alert_active`` and ``margin_alert_pending = tick``; above ``recover_above`` re-arms.
    """
    sign = {"$cond": [{"$eq": ["$side", "LONG"]}, 1, -1]}
    unrealized = {
        "$subtract": [
            {"$multiply": [sign, {"$subtract": ["$current_price", "$entry_price"]}, "$quantity"]},
            _zero_if_null("total_fees"),
        ]
    }
    ratio = "$margin_ratio"
    active = {"$ifNull": [f"${ACTIVE_FIELD}", False]}
    crossed = {"$and": [{"$lt": [ratio, alert_below]}, {"$not": [active]}]}
    rearmed = {"$cond": [{"$gt": [ratio, recover_above]}, False, active]}
    return [
        {"$set": {"current_price": price, "updated_at": now, "last_price_update": now}},
        {"$set": {"unrealized_pnl": unrealized}},
        {
            "$set": {
                "total_pnl": {"$add": ["$unrealized_pnl", _zero_if_null("realized_pnl")]},
                "margin_ratio": {
                    "$toDouble": {
                        "$divide": [
                            {"$add": ["$margin_used", "$unrealized_pnl"]},
                            "$maintenance_margin",
                        ]
                    }
                },
                # $max/$min ignore a missing operand: a first excursion is the unrealized P&L.
                "metadata.max_favorable_excursion": {
                    "$max": ["$metadata.max_favorable_excursion", "$unrealized_pnl"]
                },
                "metadata.max_adverse_excursion": {
                    "$min": ["$metadata.max_adverse_excursion", "$unrealized_pnl"]
                },
            }
        },
        {
            "$set": {
                "pnl_percentage": {
                    "$toDouble": {"$divide": [{"$multiply": ["$total_pnl", 100]}, "$margin_used"]}
                },
                # Both read the previous active flag (same stage): crossing, then re-arm.
                ACTIVE_FIELD: {"$cond": [crossed, True, rearmed]},
                PENDING_FIELD: {"$cond": [crossed, tick, f"${PENDING_FIELD}"]},
            }
        },
    ]


def pending_filter(symbols: Collection[str] | None) -> dict[str, Any]:
    """Positions whose crossing has not been turned into a notification yet."""
    query: dict[str, Any] = {PENDING_FIELD: {"$gte": MIN_OBJECT_ID}}
    if symbols is not None:
        query["symbol"] = {"$in": sorted(symbols)}
    return query


def census_pipeline(
    symbols: Collection[str], validator: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Aggregation counting the positions of ``symbols`` the filter excludes, per
    (symbol, reason), with one sample ``_id`` each. A position only the collection's validator
    rejects has the reason ``collection_validator``."""
    branches = [{"case": invalid, "then": reason} for reason, _, invalid in _REASON_TABLE]
    match = {"symbol": {"$in": sorted(symbols)}, "$nor": [{"$and": _conditions(validator)}]}
    return [
        {"$match": match},
        {
            "$project": {
                "symbol": 1,
                "reason": {"$switch": {"branches": branches, "default": VALIDATOR_REASON}},
            }
        },
        {
            "$group": {
                "_id": {"symbol": "$symbol", "reason": "$reason"},
                "n": {"$sum": 1},
                "sample": {"$first": "$_id"},
            }
        },
    ]

"""PositionsLoop against a real wire-protocol database: exact values, staleness, alerts once per
crossing, malformed positions skipped and counted, and the number of commands per tick."""

from __future__ import annotations

import asyncio
import decimal
import logging
import random
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128
from pymongo import AsyncMongoClient

from ingestor.config import PositionsConfig
from ingestor.errors import StoreError
from ingestor.positions import PositionsLoop
from ingestor.positions.alerts import derived_id
from ingestor.state import PriceBook
from tests.ingestor.positions.helpers import NOW, D, Env, spec_position
from tests.integration.harness import eventually

CTX = decimal.Context(prec=34)  # Decimal128's precision: what the server computes with


def dec(value: Any) -> Decimal:
    assert isinstance(value, Decimal128), f"{value!r} is not Decimal128"
    return value.to_decimal()


def expected(doc: dict[str, Any], price: str) -> dict[str, Any]:
    """The refreshed fields of ``doc`` at ``price``, computed independently in Decimal."""
    p, s = Decimal(price), 1 if doc["side"] == "LONG" else -1
    e, q = dec(doc["entry_price"]), dec(doc["quantity"])
    fees, realized = dec(doc["total_fees"]), dec(doc["realized_pnl"])
    margin, maint = dec(doc["margin_used"]), dec(doc["maintenance_margin"])
    upnl = CTX.subtract(CTX.multiply(CTX.multiply(s, CTX.subtract(p, e)), q), fees)
    total = CTX.add(upnl, realized)
    return {
        "unrealized_pnl": upnl,
        "total_pnl": total,
        "pnl_percentage": float(CTX.divide(CTX.multiply(total, 100), margin)),
        "margin_ratio": float(CTX.divide(CTX.add(margin, upnl), maint)),
    }


def assert_refreshed(doc: dict[str, Any], before: dict[str, Any], price: str) -> None:
    want = expected(before, price)
    assert doc["current_price"] == Decimal128(price)
    assert dec(doc["unrealized_pnl"]) == want["unrealized_pnl"]
    assert dec(doc["total_pnl"]) == want["total_pnl"]
    assert doc["pnl_percentage"] == want["pnl_percentage"]
    assert doc["margin_ratio"] == want["margin_ratio"]
    assert doc["updated_at"] == doc["last_price_update"] == NOW


async def test_spec_example_exactly(env: Env) -> None:
    pos = spec_position()
    await env.db.positions.insert_one(pos)
    env.price("BTCUSDT", "51500.00")
    result = await env.loop().refresh_once()
    assert result.updated == ("BTCUSDT",) and (result.matched, result.modified) == (1, 1)
    doc = await env.get(pos["_id"])
    assert doc["current_price"] == D("51500.00")
    assert dec(doc["unrealized_pnl"]) == Decimal("148")  # stored as 148.000
    assert dec(doc["total_pnl"]) == Decimal("148")
    assert doc["pnl_percentage"] == 29.6
    assert doc["margin_ratio"] == 5.184
    assert doc["updated_at"] == doc["last_price_update"] == NOW
    # The spec's excursions (200, -50) already contain 148: unchanged.
    assert doc["metadata"]["max_favorable_excursion"] == D("200.00")
    assert doc["metadata"]["max_adverse_excursion"] == D("-50.00")
    assert doc["metadata"]["risk_score"] == 0.42
    untouched = {
        k: v
        for k, v in pos.items()
        if k
        not in {
            "current_price",
            "unrealized_pnl",
            "total_pnl",
            "pnl_percentage",
            "margin_ratio",
            "updated_at",
            "last_price_update",
            "metadata",
        }
    }
    assert {k: doc[k] for k in untouched} == untouched
    assert doc["margin_alert_active"] is False and "margin_alert_pending" not in doc


async def test_long_and_short_with_realized_pnl_exact(env: Env) -> None:
    rng = random.Random(7)
    docs = []
    for i in range(40):
        docs.append(
            spec_position(
                symbol="ETHUSDT",
                side="LONG" if i % 2 else "SHORT",
                entry_price=D(f"{rng.randint(100_000, 400_000) / 100:.2f}"),
                quantity=D(f"{rng.randint(1, 10**6) / 10**4:.4f}"),
                total_fees=D(f"{rng.randint(0, 5000) / 1000:.3f}"),
                realized_pnl=D(f"{rng.randint(-(10**5), 10**5) / 100:.2f}"),
                margin_used=D(f"{rng.randint(10_000, 10**6) / 100:.2f}"),
                maintenance_margin=D(f"{rng.randint(100, 10**5) / 100:.2f}"),
            )
        )
    await env.db.positions.insert_many(docs)
    loop = env.loop()
    for price in ("2512.37", "1999.99", "3333.33333333"):
        env.price("ETHUSDT", price)
        result = await loop.refresh_once()
        assert result.updated == ("ETHUSDT",) and (result.matched, result.modified) == (40, 40)
        for before in docs:
            assert_refreshed(await env.get(before["_id"]), before, price)
    # A SHORT gains when the price falls: the spec example mirrored.
    short = spec_position(symbol="SOLUSDT", side="SHORT", realized_pnl=D("-12.50"))
    await env.db.positions.insert_one(short)
    env.price("SOLUSDT", "48500.00")
    await loop.refresh_once()
    doc = await env.get(short["_id"])
    assert dec(doc["unrealized_pnl"]) == Decimal("148")
    assert dec(doc["total_pnl"]) == Decimal("135.5")
    assert doc["pnl_percentage"] == 27.1


async def test_excursions_only_widen_and_start_at_the_first_pnl(env: Env) -> None:
    # Without the spec's validator (it requires both excursions), positions may lack them.
    await env.db.command({"collMod": "positions", "validator": {}})
    pos = spec_position(total_fees=D("0"), metadata={"risk_score": 0.1})
    bare = spec_position(total_fees=D("0"), metadata=...)
    await env.db.positions.insert_many([pos, bare])
    loop = env.loop()
    seen: list[Decimal] = []
    for price in ("50100", "50300", "49900", "50000", "49500", "50200"):
        env.price("BTCUSDT", price)
        await loop.refresh_once()
        seen.append((Decimal(price) - 50000) * Decimal("0.1"))
        for _id in (pos["_id"], bare["_id"]):
            meta = (await env.get(_id))["metadata"]
            assert dec(meta["max_favorable_excursion"]) == max(seen)
            assert dec(meta["max_adverse_excursion"]) == min(seen)
    assert (await env.get(pos["_id"]))["metadata"]["risk_score"] == 0.1


async def test_stale_or_unchanged_price_is_not_applied(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    pos = spec_position()
    await env.db.positions.insert_one(pos)
    loop = env.loop(census_every=1000)
    env.price("BTCUSDT", "51500.00", age_s=10.5)  # max_price_age_ms = 10 s
    with caplog.at_level(logging.WARNING, "ingestor.positions"):
        for _ in range(3):
            result = await loop.refresh_once()
            assert result.stale == ("BTCUSDT",) and result.updated == ()
    assert sum("BTCUSDT price is" in r.message for r in caplog.records) == 1  # once while stale
    assert loop.stats.stale_skips == 3
    assert (await env.get(pos["_id"]))["current_price"] == D("50000.00")
    env.commands.take()
    env.price("BTCUSDT", "51500.00", age_s=9.9)
    result = await loop.refresh_once()
    assert result.updated == ("BTCUSDT",) and result.stale == ()
    assert (result.matched, result.modified) == (1, 1)
    assert (await env.get(pos["_id"]))["current_price"] == D("51500.00")
    # The same price again: nothing to do, not a single command.
    env.commands.take()
    env.clock.t += 1
    env.price("BTCUSDT", "51500.00")
    result = await loop.refresh_once()
    assert result.updated == () and result.commands == 0 and env.commands.take() == []


async def test_commands_per_tick_one_update_command_for_all_symbols_plus_the_documented_constant(
    env: Env,
) -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")
    await env.db.positions.insert_many(
        [spec_position(symbol=s) for s in symbols for _ in range(25)]
    )
    loop = env.loop(census_every=3)
    await loop.load_validator()  # done by the first tick otherwise: one listCollections
    for s in symbols:
        env.price(s, "50010")
    env.commands.take()
    # Tick 0 is a census tick: one update command (4 updateMany statements, one per symbol),
    # the pending-alert find and the census aggregate.
    result = await loop.refresh_once()
    names = env.commands.take()
    assert sorted(names) == ["aggregate", "find", "update"]
    assert result.commands == len(names) == 3
    assert result.updated == tuple(sorted(symbols))
    # Tick 1: two prices moved -> one update command (two statements) and the find.
    env.price("BTCUSDT", "50020")
    env.price("SOLUSDT", "50030")
    result = await loop.refresh_once()
    assert sorted(env.commands.take()) == ["find", "update"]
    assert result.updated == ("BTCUSDT", "SOLUSDT") and (result.matched, result.modified) == (
        50,
        50,
    )
    # Tick 2: nothing moved -> nothing sent.
    result = await loop.refresh_once()
    assert env.commands.take() == [] and result.commands == 0
    # Tick 3 (census): one moved, the others are re-applied (positions opened since get values).
    env.price("ETHUSDT", "50040")
    late = spec_position(symbol="BNBUSDT")
    await env.db.positions.insert_one(late)
    env.commands.take()
    await loop.refresh_once()
    assert sorted(env.commands.take()) == ["aggregate", "find", "update"]
    assert (await env.get(late["_id"]))["current_price"] == D("50010")
    # An alert tick adds exactly insert (notifications), insert (audit_logs), update (clear).
    env.price("ETHUSDT", "46000")
    env.commands.take()
    result = await loop.refresh_once()
    assert result.alerts == 25
    assert sorted(env.commands.take()) == ["find", "insert", "insert", "update", "update"]
    assert loop.stats.commands == 3 + 2 + 0 + 3 + 5


def _alert_position() -> dict[str, Any]:
    # ratio = (500 + 0.1 (p - 50000)) / 125: < 1.5 below 46875, > 1.75 above 47187.5
    return spec_position(total_fees=D("0"))


async def test_alert_once_per_crossing_and_again_after_recovery(env: Env) -> None:
    pos = _alert_position()
    other = spec_position(symbol="ETHUSDT")
    await env.db.positions.insert_many([pos, other])
    loop = env.loop(census_every=1000)

    async def tick(price: str) -> tuple[int, dict[str, Any]]:
        env.price("BTCUSDT", price)
        result = await loop.refresh_once()
        return result.alerts, await env.get(pos["_id"])

    assert (await tick("48000"))[0] == 0  # ratio 2.4
    alerts, doc = await tick("46000")  # ratio 0.8: crossing, critical
    assert alerts == 1 and doc["margin_alert_active"] is True
    assert "margin_alert_pending" not in doc
    for price in ("45000", "47000", "46500"):  # still below, or not above recover_above
        assert (await tick(price))[0] == 0
    alerts, doc = await tick("47200")  # ratio 1.776 > 1.75: re-armed, no alert
    assert alerts == 0 and doc["margin_alert_active"] is False
    assert (await tick("47100"))[0] == 0  # 1.68: between the thresholds
    assert (await tick("46800"))[0] == 1  # 1.44: a new crossing, a warning
    assert loop.stats.alerts_written == 2

    notes = await env.db.notifications.find(
        {}, sort=[("created_at", 1), ("margin_ratio", 1)]
    ).to_list(None)
    assert [(n["severity"], n["margin_ratio"], n["current_price"]) for n in notes] == [
        ("critical", 0.8, D("46000")),
        ("warning", 1.44, D("46800")),
    ]
    for n in notes:
        assert n["user_id"] == pos["user_id"] and n["position_id"] == pos["_id"]
        assert n["type"] == "margin_alert" and n["read"] is False and n["symbol"] == "BTCUSDT"
        assert n["created_at"] == NOW and n["title"] and "BTCUSDT" in n["message"]
    audits = await env.db.audit_logs.find({}).to_list(None)
    assert len(audits) == 2
    for a in audits:
        assert a["user_id"] is None and a["action"] == "MARGIN_ALERT"
        assert a["resource"] == "position" and a["resource_id"] == str(pos["_id"])
        assert a["status"] == "SUCCESS" and a["error_message"] is None
        assert a["timestamp"] == a["created_at"] == NOW
        assert a["metadata"]["notification_id"] in {n["_id"] for n in notes}
    assert await env.db.notifications.count_documents({"position_id": other["_id"]}) == 0
    ttl = (await env.db.notifications.index_information())["created_at_1"]
    assert ttl["expireAfterSeconds"] == 7 * 86_400


async def test_alert_retried_after_a_crash_is_not_written_twice(env: Env) -> None:
    pos = _alert_position()
    await env.db.positions.insert_one(pos)
    loop = env.loop(census_every=1000)
    env.price("BTCUSDT", "46000")
    assert (await loop.refresh_once()).alerts == 1
    note = await env.db.notifications.find_one({})
    assert note is not None
    # A crash between the inserts and the clearing of the mark leaves the mark behind: the
    # next loop (a restart) finds it on its first tick and must not alert again.
    crossing = (await env.db.audit_logs.find_one({}) or {})["metadata"]["tick_id"]
    assert derived_id("notification", pos["_id"], crossing) == note["_id"]
    await env.db.positions.update_one(
        {"_id": pos["_id"]}, {"$set": {"margin_alert_pending": crossing}}
    )
    restarted = env.loop(census_every=1000)
    result = await restarted.refresh_once()  # its first tick looks for pending marks
    assert result.alerts == 0 and result.updated == ("BTCUSDT",) and result.matched == 1
    assert await env.db.notifications.count_documents({}) == 1
    assert await env.db.audit_logs.count_documents({}) == 1
    assert "margin_alert_pending" not in await env.get(pos["_id"])


async def test_malformed_positions_are_skipped_counted_and_logged_once(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    good = [spec_position(), spec_position(side="SHORT")]
    bad = {
        "side_invalid": spec_position(side="BUY"),
        "entry_price_not_numeric": spec_position(entry_price="50000.00"),
        "quantity_missing": spec_position(quantity=...),
        "maintenance_margin_not_positive": spec_position(maintenance_margin=D("0")),
        "margin_used_not_positive": spec_position(margin_used=D("NaN")),
        "total_fees_not_numeric": spec_position(total_fees="2.00"),
        "metadata_not_object": spec_position(metadata="n/a"),
        "metadata.max_adverse_excursion_not_numeric": spec_position(
            metadata={"max_adverse_excursion": "-50"}
        ),
    }
    also_zero = spec_position(maintenance_margin=0)
    # Valid for the loop, not for the spec's validator: updating it would fail the update_many.
    bad["collection_validator"] = spec_position(margin_type="hedge", leverage=0)
    # Written before the validator existed (or by a writer bypassing it).
    await env.db.positions.insert_many(
        [*good, *bad.values(), also_zero], bypass_document_validation=True
    )
    loop = env.loop(census_every=1)
    env.price("BTCUSDT", "51500.00")
    with caplog.at_level(logging.WARNING, "ingestor.positions"):
        result = await loop.refresh_once()
        env.price("BTCUSDT", "51600.00")
        again = await loop.refresh_once()
    assert result.updated == again.updated == ("BTCUSDT",)
    assert (result.matched, result.modified) == (again.matched, again.modified) == (2, 2)
    for g in good:
        assert_refreshed(await env.get(g["_id"]), g, "51600.00")
    for b in [*bad.values(), also_zero]:
        assert (await env.get(b["_id"]))["current_price"] == D("50000.00")  # untouched
    want = {("BTCUSDT", r): 1 for r in bad}
    want["BTCUSDT", "maintenance_margin_not_positive"] = 2
    assert result.malformed == want and again.malformed == want
    assert loop.stats.malformed_skipped == {r: n for (_, r), n in want.items()}
    logged = [r.message for r in caplog.records if "malformed" in r.message]
    assert len(logged) == len(bad)  # once per reason, not per tick
    assert all(any(f"({r})" in m for m in logged) for r in bad)


async def test_only_owned_symbols_are_refreshed(env: Env) -> None:
    mine, theirs = spec_position(), spec_position(symbol="ETHUSDT")
    await env.db.positions.insert_many([mine, theirs])
    loop = env.loop(symbols={"BTCUSDT"})
    env.price("BTCUSDT", "46000")
    env.price("ETHUSDT", "46000")
    result = await loop.refresh_once()
    assert result.updated == ("BTCUSDT",) and (result.matched, result.modified) == (1, 1)
    assert (await env.get(theirs["_id"]))["current_price"] == D("50000.00")
    assert "margin_alert_active" not in await env.get(theirs["_id"])


async def test_bad_price_is_not_applied(env: Env) -> None:
    pos = spec_position()
    await env.db.positions.insert_one(pos)
    loop = env.loop()
    for text in ("abc", "-1", "0", "NaN"):
        env.price("BTCUSDT", text)
        assert (await loop.refresh_once()).updated == ()
    assert loop.stats.bad_prices == 4
    assert (await env.get(pos["_id"]))["current_price"] == D("50000.00")


async def test_run_ticks_until_cancelled(env: Env) -> None:
    pos = spec_position()
    await env.db.positions.insert_one(pos)
    book = PriceBook()
    loop = PositionsLoop(env.db, book, PositionsConfig(refresh_ms=10), now=lambda: NOW)
    task = asyncio.create_task(loop.run())
    try:
        for price in ("51500.00", "52000.00"):
            book.update("BTCUSDT", price, int(Decimal(price)))

            async def applied(price: str = price) -> bool:
                return bool((await env.get(pos["_id"]))["current_price"] == D(price))

            await eventually(applied, 10, f"price {price} applied by run()")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert loop.stats.ticks >= 2 and loop.stats.tick_errors == 0


async def test_unreachable_database_is_a_store_error() -> None:
    mc: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:9/?directConnection=true", serverSelectionTimeoutMS=100
    )
    try:
        book = PriceBook()
        book.update("BTCUSDT", "1.5", 1)
        loop = PositionsLoop(mc.nodb, book, PositionsConfig())
        with pytest.raises(StoreError):
            await loop.refresh_once()
        assert loop.stats.symbols_updated == 0
    finally:
        await mc.close()


async def test_alert_backlog_drains_over_ticks_without_price_changes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingestor.positions.loop as loop_module

    monkeypatch.setattr(loop_module, "MAX_ALERTS_PER_TICK", 2)
    await env.db.positions.insert_many([_alert_position() for _ in range(5)])
    loop = env.loop(census_every=1000)
    env.price("BTCUSDT", "46000")
    assert (await loop.refresh_once()).alerts == 2
    env.commands.take()
    for want in (2, 1):  # no price change: only the backlog is worked off
        result = await loop.refresh_once()
        assert result.alerts == want and result.updated == ()
        assert sorted(env.commands.take()) == ["find", "insert", "insert", "update"]
    result = await loop.refresh_once()  # the last find saw fewer than a full batch: idle now
    assert result.commands == 0 and env.commands.take() == []
    assert await env.db.notifications.count_documents({}) == 5
    assert await env.db.positions.count_documents({"margin_alert_pending": {"$exists": True}}) == 0

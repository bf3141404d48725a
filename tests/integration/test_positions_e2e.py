"""simulator -> `ingestor run` (a real process) -> positions seeded in a real wire-protocol
database: their current_price follows the feed and every derived field agrees with it."""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from bson import Decimal128, ObjectId

from ingestor.schema import apply
from ingestor.simulator import SimConfig, Simulator
from ingestor.store.schema import DAEMON_COLLECTIONS
from tests.conftest import TIMEOUT_FACTOR
from tests.integration.harness import SYMBOLS, client, eventually, write_config

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

SPEED = 120.0
REFRESH_MS = 200
#: A stored price must be one the feed sent this recently (refresh + pipeline lag, loaded box).
RECENT_S = 5.0 * TIMEOUT_FACTOR
CTX = decimal.Context(prec=34)
SEEDED_AT = datetime(2025, 1, 1, tzinfo=UTC)


class FeedRecorder:
    """Our own subscriber to the daemon's streams: every close price sent, with receipt time."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[float, str]]] = defaultdict(list)

    async def run(self, url: str) -> None:
        async with websockets.connect(url, max_size=1 << 22) as ws:
            async for raw in ws:
                data = orjson.loads(raw)["data"]
                self.seen[data["s"]].append((time.monotonic(), data["k"]["c"]))

    def recent(self, symbol: str, since: float) -> set[str]:
        return {c for t, c in self.seen[symbol] if t >= since}


@contextlib.asynccontextmanager
async def recording(sim: Simulator, timeframes: list[str]) -> AsyncIterator[FeedRecorder]:
    names = "/".join(f"{s.lower()}@kline_{tf}" for s in SYMBOLS for tf in timeframes)
    rec = FeedRecorder()
    task = asyncio.create_task(rec.run(f"{sim.ws_url}/stream?streams={names}"))
    try:
        yield rec
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _positions(sim: Simulator) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Two LONG and two SHORT per symbol around its current price, plus one malformed."""
    now = sim.clock.now_ms()
    s_liq = {"LONG": Decimal("0.8"), "SHORT": Decimal("1.2")}
    docs = []
    for symbol in SYMBOLS:
        last = Decimal(str(sim.market.closed_klines(symbol, "1m", now - 600_000, now)[-1][4]))
        for i, side in enumerate(("LONG", "SHORT", "LONG", "SHORT")):
            entry = (last * Decimal(1 + (i - 1.5) / 100)).quantize(Decimal("0.01"))
            qty = Decimal("0.25") * (i + 1)
            margin = (entry * qty / 5).quantize(Decimal("0.01"))
            docs.append({
                "_id": ObjectId(), "user_id": ObjectId(), "symbol": symbol, "side": side,
                "entry_price": Decimal128(entry), "current_price": Decimal128(entry),
                "quantity": Decimal128(qty), "leverage": 5, "stop_loss": None,
                "take_profit": None, "liquidation_price": Decimal128(entry * s_liq[side]),
                "strategy_name": None, "ai_signal_id": None,
                "unrealized_pnl": Decimal128("0"), "realized_pnl": Decimal128(f"{i * 3}.75"),
                "total_pnl": Decimal128("0"), "pnl_percentage": 0.0, "margin_type": "isolated",
                "margin_used": Decimal128(margin),
                "maintenance_margin": Decimal128((margin / 8).quantize(Decimal("0.01"))),
                "margin_ratio": 8.0, "total_fees": Decimal128("1.25"),
                "funding_fees": Decimal128("0"), "opened_at": SEEDED_AT,
                "updated_at": SEEDED_AT, "last_price_update": SEEDED_AT,
                "metadata": {"max_favorable_excursion": Decimal128("0"),
                             "max_adverse_excursion": Decimal128("0"),
                             "entry_volatility": 0.2, "risk_score": 0.3},
            })  # fmt: skip
    bad = dict(docs[0], _id=ObjectId(), side="BUY")
    return docs, bad


def _dec(v: Any) -> Decimal:
    assert isinstance(v, Decimal128), v
    return v.to_decimal()


def assert_consistent(doc: dict[str, Any]) -> None:
    """Every derived field follows from the stored current_price and the position's fields."""
    s = 1 if doc["side"] == "LONG" else -1
    p, e, q = _dec(doc["current_price"]), _dec(doc["entry_price"]), _dec(doc["quantity"])
    upnl = CTX.subtract(
        CTX.multiply(CTX.multiply(s, CTX.subtract(p, e)), q), _dec(doc["total_fees"])
    )
    total = CTX.add(upnl, _dec(doc["realized_pnl"]))
    margin, maint = _dec(doc["margin_used"]), _dec(doc["maintenance_margin"])
    assert _dec(doc["unrealized_pnl"]) == upnl
    assert _dec(doc["total_pnl"]) == total
    assert doc["pnl_percentage"] == float(CTX.divide(CTX.multiply(total, 100), margin))
    assert doc["margin_ratio"] == float(CTX.divide(CTX.add(margin, upnl), maint))
    meta = doc["metadata"]
    assert _dec(meta["max_favorable_excursion"]) >= upnl >= _dec(meta["max_adverse_excursion"])
    assert doc["updated_at"] == doc["last_price_update"] > SEEDED_AT


async def test_positions_follow_the_live_feed(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    timeframes = ["1m", "5m"]
    cfg = SimConfig(symbols=SYMBOLS, speed=SPEED, update_interval_s=0.1, seed=11)
    async with Simulator(cfg) as sim, recording(sim, timeframes) as rec:
        conf = write_config(
            tmp_path / "config.toml",
            sim,
            mongo_uri,
            db_name,
            tmp_path / "data",
            timeframes=timeframes,
            warmup_candles=100,
            positions={"enabled": True, "refresh_ms": REFRESH_MS},
        )
        docs, bad = _positions(sim)
        ids = [d["_id"] for d in docs]
        mc = client(mongo_uri)
        coll = mc[db_name]["positions"]
        # As in production: the collections exist with the spec's validators before the daemon.
        await apply(mc[db_name], DAEMON_COLLECTIONS)
        await coll.insert_many(docs)
        await coll.insert_one(bad, bypass_document_validation=True)
        daemon = spawn(conf, tmp_path / "daemon.log")
        try:
            await daemon.start()

            async def snapshot() -> list[dict[str, Any]]:
                return await coll.find({"_id": {"$in": ids}}).to_list(None)

            async def all_priced() -> bool:
                return all(d["last_price_update"] > SEEDED_AT for d in await snapshot())

            try:
                await eventually(all_priced, 90, "every position priced")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; daemon log:\n{daemon.output()[-3000:]}") from None
            prices: dict[str, set[str]] = defaultdict(set)
            updates: dict[Any, set[datetime]] = defaultdict(set)
            for _ in range(4):
                stamp = max(d["last_price_update"] for d in await snapshot())

                async def advanced(stamp: datetime = stamp) -> bool:
                    return any(d["last_price_update"] > stamp for d in await snapshot())

                await eventually(advanced, 30, "the prices to move on")
                taken = time.monotonic()
                for d in await snapshot():
                    price = str(d["current_price"])
                    recent = rec.recent(d["symbol"], taken - RECENT_S)
                    assert price in recent, (
                        f"{d['symbol']}: stored {price}, feed sent {sorted(recent)[:20]}"
                    )
                    assert_consistent(d)
                    prices[d["symbol"]].add(price)
                    updates[d["_id"]].add(d["last_price_update"])
            assert all(len(prices[s]) >= 2 for s in SYMBOLS), prices  # it follows, not once
            assert all(len(u) >= 2 for u in updates.values())
            untouched = await coll.find_one({"_id": bad["_id"]})
            assert untouched is not None and untouched["updated_at"] == SEEDED_AT
            await daemon.signal()
            assert await daemon.wait(15) == 0, daemon.output()[-3000:]
        finally:
            await mc.drop_database(db_name)
            await mc.close()

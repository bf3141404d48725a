"""One positions refresh tick over the spec's 500,000 open positions across 8 symbols, on a
SecantusDB server of its own: wall time, database commands, cost per position.

SecantusDB (a Python server) rewrites a document through an update pipeline in ~1-3 ms, so a
500,000-position tick takes tens of minutes there: by default the bench measures 50,000
positions and ``extrapolated_500k_s`` scales linearly (the per-symbol updates are index range
scans, so the cost is linear in the positions touched). ``POSITIONS_BENCH_N=500000`` measures
the full count. The database has the spec's collections, indexes and validators (``ingestor
schema apply``), as the daemon creates them, before the positions are inserted.

Two ticks: a census tick (8 updates + the pending-alert find + the malformed census aggregate
+ the validator read), then a plain one (8 updates + the find). Every price moves on both, so
every position is rewritten.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import Decimal128, ObjectId
from pymongo import AsyncMongoClient, MongoClient
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from ingestor.config import PositionsConfig
from ingestor.positions import PositionsLoop, ensure_positions_schema
from ingestor.schema import apply
from ingestor.state import PriceBook
from ingestor.store.schema import DAEMON_COLLECTIONS
from tests.conftest import DBServer

__all__ = ["run"]

TARGET = 500_000
DEFAULT_N = 50_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT")
BATCH = 20_000
DB = "positions_bench"


class _Count(CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.database_name == DB:
            self.names.append(event.command_name)

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


def _positions(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    opened = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        # Leverage 10 near the bench prices (50,000 +- 1 %): nobody crosses the alert line.
        entry = rng.randint(4_900_000, 5_100_000)
        qty = rng.randint(10, 20_000)
        margin = entry * qty // 10  # in 1e-6 units: entry (1e-2) * qty (1e-4) / 10
        out.append(
            {
                "_id": ObjectId(),
                "user_id": ObjectId(),
                "symbol": SYMBOLS[i % len(SYMBOLS)],
                "side": "LONG" if i % 3 else "SHORT",
                "entry_price": Decimal128(f"{entry / 100:.2f}"),
                "current_price": Decimal128(f"{entry / 100:.2f}"),
                "quantity": Decimal128(f"{qty / 10_000:.4f}"),
                "leverage": 10,
                "stop_loss": None,
                "take_profit": None,
                "liquidation_price": Decimal128(f"{entry * (9 if i % 3 else 11) / 1000:.2f}"),
                "unrealized_pnl": Decimal128("0"),
                "realized_pnl": Decimal128(f"{rng.randint(-10_000, 10_000) / 100:.2f}"),
                "total_pnl": Decimal128("0"),
                "pnl_percentage": 0.0,
                "margin_type": "isolated",
                "margin_used": Decimal128(f"{margin / 1e6:.2f}"),
                "maintenance_margin": Decimal128(f"{margin / 4e6:.2f}"),
                "margin_ratio": 4.0,
                "total_fees": Decimal128(f"{entry * qty * 4 / 10**10:.2f}"),  # 0.04 % taker fee
                "funding_fees": Decimal128("0"),
                "strategy_name": None,
                "ai_signal_id": None,
                "opened_at": opened + timedelta(seconds=i),
                "updated_at": opened,
                "last_price_update": opened,
                "metadata": {
                    "max_favorable_excursion": Decimal128("0"),
                    "max_adverse_excursion": Decimal128("0"),
                    "entry_volatility": 0.3,
                    "risk_score": 0.5,
                },
            }
        )
    return out


async def _schema(uri: str) -> None:
    """As the daemon starts: the spec's collections, indexes and validators."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        await apply(client[DB], DAEMON_COLLECTIONS)
    finally:
        await client.close()


def _seed(uri: str, n: int) -> float:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        coll = client[DB]["positions"]
        t0 = time.perf_counter()
        for start in range(0, n, BATCH):
            coll.insert_many(_positions(min(BATCH, n - start), seed=start), ordered=False)
        return time.perf_counter() - t0
    finally:
        client.close()


async def _ticks(uri: str, n: int) -> dict[str, Any]:
    listener = _Count()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri, event_listeners=[listener], socketTimeoutMS=0
    )
    try:
        db = client[DB]
        t0 = time.perf_counter()
        await ensure_positions_schema(db)  # the loop's own sparse index
        index_s = time.perf_counter() - t0
        book = PriceBook()
        loop = PositionsLoop(db, book, PositionsConfig(max_price_age_ms=3_600_000))
        figures: dict[str, Any] = {"index_build_s": round(index_s, 2)}
        for name, move in (("census_tick", 1.01), ("plain_tick", 0.99)):
            for i, s in enumerate(SYMBOLS):
                book.update(s, f"{50000 * move + i:.2f}", book.event_ms.get(s, 0) + 1)
            listener.names.clear()
            t0 = time.perf_counter()
            result = await loop.refresh_once()
            wall = time.perf_counter() - t0
            matched = result.matched
            figures[name] = {
                "wall_s": round(wall, 3),
                "commands": len(listener.names),
                "command_names": sorted(listener.names),
                "updates": listener.names.count("update"),
                "positions_matched": matched,
                "positions_modified": result.modified,
                "us_per_position": round(wall / max(1, matched) * 1e6, 2),
                "extrapolated_500k_s": round(wall * TARGET / n, 1),
            }
        return figures
    finally:
        await client.close()


def run() -> dict[str, Any]:
    n = int(os.environ.get("POSITIONS_BENCH_N", DEFAULT_N))
    with tempfile.TemporaryDirectory(prefix="positions-bench-") as tmp:
        server = DBServer(Path(tmp))
        server.start()
        try:
            asyncio.run(_schema(server.uri))
            seed_s = _seed(server.uri, n)
            figures = asyncio.run(_ticks(server.uri, n))
        finally:
            server.stop()
    return {
        "database": "SecantusDB (python -m secantus, own server, --sync-on-commit), "
        "spec validators and indexes applied",
        "positions": n,
        "extrapolated_to": TARGET if n != TARGET else None,
        "symbols": len(SYMBOLS),
        "seed_s": round(seed_s, 1),
        "seed_docs_per_s": round(n / seed_s),
        **figures,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))

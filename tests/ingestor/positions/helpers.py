"""Helpers of the positions tests: command recording, a controllable clock, the loop's
environment, and positions built from the spec's example document."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import Decimal128, ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from ingestor.config import PositionsConfig
from ingestor.positions import PositionsLoop
from ingestor.state import PriceBook

D = Decimal128
NOW = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


class Commands(CommandListener):
    """Names of the commands sent to one database (the driver's own admin traffic excluded)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.names: list[str] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.database_name == self.database:
            self.names.append(event.command_name)

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def take(self) -> list[str]:
        out, self.names = self.names, []
        return out


@dataclass
class Clock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Env:
    db: AsyncDatabase[dict[str, Any]]
    commands: Commands
    clock: Clock = field(default_factory=Clock)
    book: PriceBook = field(default_factory=PriceBook)
    now: datetime = NOW

    def price(self, symbol: str, price: str, age_s: float = 0.0) -> None:
        """The feed saw ``price`` ``age_s`` seconds ago (by the loop's clock)."""
        self.book.update(symbol, price, self.book.event_ms.get(symbol, 0) + 1)
        self.book.received_at[symbol] = self.clock.t - age_s

    def loop(self, **kwargs: Any) -> PositionsLoop:
        config = kwargs.pop("config", PositionsConfig(refresh_ms=10))
        return PositionsLoop(
            self.db, self.book, config, clock=self.clock, now=lambda: self.now, **kwargs
        )

    async def get(self, _id: Any) -> dict[str, Any]:
        doc = await self.db.positions.find_one({"_id": _id})
        assert doc is not None
        return doc


def spec_position(**changes: Any) -> dict[str, Any]:
    """The spec's example position (section 3) before its price update, with ``changes``."""
    doc: dict[str, Any] = {
        "_id": ObjectId(),
        "user_id": ObjectId(),
        "symbol": "BTCUSDT",
        "side": "LONG",
        "entry_price": D("50000.00"),
        "current_price": D("50000.00"),
        "quantity": D("0.1"),
        "leverage": 10,
        "stop_loss": D("48000.00"),
        "take_profit": D("55000.00"),
        "liquidation_price": D("45000.00"),
        "unrealized_pnl": D("0.00"),
        "realized_pnl": D("0.00"),
        "total_pnl": D("0.00"),
        "pnl_percentage": 0.0,
        "margin_type": "isolated",
        "margin_used": D("500.00"),
        "maintenance_margin": D("125.00"),
        "margin_ratio": 4.0,
        "total_fees": D("2.00"),
        "funding_fees": D("0.50"),
        "strategy_name": "Momentum_Breakout",
        "ai_signal_id": "ai_signal_789",
        "opened_at": datetime(2025, 10, 10, 8, tzinfo=UTC),
        "updated_at": datetime(2025, 10, 10, 8, tzinfo=UTC),
        "last_price_update": datetime(2025, 10, 10, 8, tzinfo=UTC),
        "metadata": {
            "max_favorable_excursion": D("200.00"),
            "max_adverse_excursion": D("-50.00"),
            "entry_volatility": 0.35,
            "risk_score": 0.42,
        },
    }
    for key, value in changes.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc

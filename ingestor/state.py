"""Observable state of a running daemon: counters, per-stream progress, latest prices.

Plain objects owned by the service and handed to the stages that update them; the health
endpoint (and tests) read them. No globals.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["PipelineState", "PriceBook"]


@dataclass(slots=True)
class PriceBook:
    """Latest price per symbol from every kline event (closed or not), for the positions loop."""

    prices: dict[str, str] = field(default_factory=dict)
    event_ms: dict[str, int] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)

    def update(self, symbol: str, price: str, event_ms: int) -> None:
        if event_ms >= self.event_ms.get(symbol, 0):
            self.prices[symbol] = price
            self.event_ms[symbol] = event_ms
            self.received_at[symbol] = time.monotonic()


@dataclass(slots=True)
class PipelineState:
    n_streams: int
    frames: int = 0
    closed_klines: int = 0
    rest_klines: int = 0
    seam_duplicates: int = 0
    final_probes: int = 0
    healed: int = 0
    expired_skipped: int = 0  # REST klines already past the retention: indicators only
    expired_deleted: int = 0  # candles the daemon deleted past the retention (embedded server)
    journal_depth: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    inserted: int = 0
    db_ok: bool = True
    db_failures: int = 0
    started: bool = False
    last_stored_open: npt.NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.last_stored_open = np.full(self.n_streams, -1, dtype=np.int64)

    def set_db_ok(self, ok: bool) -> None:
        if not ok:
            self.db_failures += 1
        self.db_ok = ok

"""What the service asks of the candle store, and a store that needs no database.

The service writes through a :class:`CandleSink`: ``insert`` a batch (the spool), read a
stream's stored ``history`` (the warm-up). ``CandleStore`` (``store.writer``) is the one the
daemon uses; :class:`NullStore` acknowledges every batch after encoding it exactly as the
writer would (so a benchmark pays the daemon's CPU for it) and stores nothing, so the service
can be measured without a database.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ingestor.candles import Candles
from ingestor.store.bson_encode import BsonEncoder
from ingestor.streams import StreamKey

__all__ = ["CandleSink", "NullStore"]


class CandleSink(Protocol):
    async def insert(self, candles: Candles, *, suspect: bool = False) -> int:
        """Store ``candles`` (``suspect``: some may be stored already); the number inserted."""
        ...

    async def history(
        self, key: StreamKey, n: int, before_ms: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The stream's last ``n`` stored open times (ms) and closes, oldest first."""
        ...


class NullStore:
    """A sink that encodes each batch to BSON and drops it: nothing is ever stored."""

    def __init__(self, keys: Sequence[StreamKey]) -> None:
        self._encoder = BsonEncoder(list(keys))
        self.inserted = 0

    async def insert(self, candles: Candles, *, suspect: bool = False) -> int:
        self._encoder.encode(candles, time.time_ns() // 1_000_000)
        self.inserted += len(candles)
        return len(candles)

    async def history(
        self, key: StreamKey, n: int, before_ms: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        return np.empty(0, np.int64), np.empty(0, np.float64)

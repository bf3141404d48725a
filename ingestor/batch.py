"""Size-or-linger batching of closed klines into columns (sans-I/O, injected clock).

A batch is flushed when it holds ``max_batch`` candles or ``linger_s`` after its first candle,
whichever comes first. The caller owns the clock and the waiting: :meth:`Batcher.deadline` says
when the open batch is due, so tests drive time instead of sleeping.
"""

from __future__ import annotations

from ingestor.candles import Candles
from ingestor.decode import ClosedKline

__all__ = ["Batcher"]


class Batcher:
    """Collects rows; hands out :class:`Candles` when full or due."""

    def __init__(self, max_batch: int, linger_s: float, source: str = "binance") -> None:
        if max_batch < 1 or linger_s < 0:
            raise ValueError("max_batch must be >= 1 and linger_s >= 0")
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._source = source
        self._ids: list[int] = []
        self._rows: list[tuple[object, ...]] = []
        self._first_at: float | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def deadline(self) -> float | None:
        """Clock time at which the open batch is due, or None when empty."""
        return None if self._first_at is None else self._first_at + self.linger_s

    def add(self, kline: ClosedKline, now: float) -> Candles | None:
        """Add one kline; returns the batch if that filled it."""
        if self._first_at is None:
            self._first_at = now
        self._ids.append(kline.stream_id)
        self._rows.append(kline.row)
        return self.flush() if len(self._rows) >= self.max_batch else None

    def due(self, now: float) -> bool:
        d = self.deadline()
        return d is not None and now >= d

    def flush(self) -> Candles | None:
        """The open batch as columns (None when empty); the batcher starts afresh."""
        if not self._rows:
            return None
        out = Candles.from_rows(self._ids, self._rows, source=self._source)
        self._ids, self._rows, self._first_at = [], [], None
        return out

"""Size-or-linger batching of closed klines into columns (sans-I/O, injected clock).

A batch is flushed when it holds ``max_batch`` candles or ``linger_s`` after its first candle,
whichever comes first, or as soon as it is complete: every stream that closes at each close
time in the batch has its kline there (:meth:`Batcher.complete`). The linger only gathers the
klines of one close time, which the exchange sends within moments of each other; once all of
them are in, waiting longer adds latency and no candle. The caller owns the clock and the
waiting: :meth:`Batcher.deadline` says when the open batch is due, so tests drive time instead
of sleeping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ingestor.candles import Candles
from ingestor.decode import ClosedKline

__all__ = ["Batcher"]


class Batcher:
    """Collects rows; hands out :class:`Candles` when full or due.

    ``intervals``: each stream's interval in ms (index = stream id), from which the number of
    streams closing at a given time follows (every interval is aligned to the epoch); without
    them a batch is never complete early.
    """

    def __init__(
        self,
        max_batch: int,
        linger_s: float,
        source: str = "binance",
        intervals: Sequence[int] = (),
    ) -> None:
        if max_batch < 1 or linger_s < 0:
            raise ValueError("max_batch must be >= 1 and linger_s >= 0")
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._source = source
        self._ids: list[int] = []
        self._rows: list[tuple[object, ...]] = []
        self._first_at: float | None = None
        self._per_interval = sorted(Counter(intervals).items())  # (interval, streams)
        self._closing: dict[int, int] = {}  # close boundary -> streams closing there (cache)
        self._at: dict[int, int] = {}  # close boundary -> klines of it in the open batch
        self._open = 0  # boundaries in the open batch still missing a stream's kline

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
        if self._per_interval:
            self._count(kline.row[6])
        return self.flush() if len(self._rows) >= self.max_batch else None

    def complete(self) -> bool:
        """Every stream closing at each close time of the open batch has its kline in it."""
        return bool(self._rows) and self._open == 0 and bool(self._per_interval)

    def due(self, now: float) -> bool:
        d = self.deadline()
        return d is not None and now >= d

    def flush(self) -> Candles | None:
        """The open batch as columns (None when empty); the batcher starts afresh."""
        if not self._rows:
            return None
        out = Candles.from_rows(self._ids, self._rows, source=self._source)
        self._ids, self._rows, self._first_at = [], [], None
        self._at.clear()
        self._open = 0
        return out

    def _count(self, close_time: object) -> None:
        boundary = int(close_time) + 1  # type: ignore[call-overload]
        seen = self._at.get(boundary, 0) + 1
        self._at[boundary] = seen
        closing = self._closing.get(boundary)
        if closing is None:
            if len(self._closing) > 1024:  # past boundaries: bounded
                self._closing.clear()
            closing = sum(n for iv, n in self._per_interval if boundary % iv == 0)
            self._closing[boundary] = closing
        if seen == 1:
            self._open += 1
        if seen == closing:
            self._open -= 1

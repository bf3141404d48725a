"""The newest stored candle of each stream (open time, close, indicators), for ``/status``.

Kept from the batches the writer acknowledges, so ``/status`` shows what is really in the
database without querying it. Per stored batch: one sort of the batch's (stream, open time) and a
few fancy-indexed copies into fixed per-stream arrays; nothing grows. After a restart a stream
shows nothing until its next candle is stored (warm-up reads the database but stores nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ingestor.candles import INDICATOR_FIELDS, Candles

__all__ = ["LatestCandles"]


class LatestCandles:
    """``record(batch)`` after each stored batch; ``rows()`` for the health endpoint."""

    def __init__(self, streams: Sequence[str]) -> None:
        n = len(streams)
        self.streams = list(streams)
        self.open_ms = np.full(n, -1, dtype=np.int64)
        self.close = np.zeros(n, dtype="S32")
        self.indicators = np.full((n, len(INDICATOR_FIELDS)), np.nan)

    def record(self, batch: Candles) -> None:
        """Keep each stream's newest row of ``batch`` when it is newer than the one kept."""
        if not len(batch):
            return
        sid = batch.stream_id
        order = np.lexsort((batch.open_time, sid))
        s = sid[order]
        last = order[np.r_[s[1:] != s[:-1], True]]  # each stream's newest row in the batch
        streams = sid[last]
        newer = batch.open_time[last] > self.open_ms[streams]
        rows, streams = last[newer], streams[newer]
        self.open_ms[streams] = batch.open_time[rows]
        self.close[streams] = batch.decimals["close_price"][rows]
        if batch.indicators is not None:
            self.indicators[streams] = batch.indicators[rows]

    def rows(self) -> dict[str, dict[str, Any]]:
        """Stream name -> its newest stored candle; streams with none stored are left out."""
        out: dict[str, dict[str, Any]] = {}
        have = np.flatnonzero(self.open_ms >= 0)
        opens, closes = self.open_ms[have].tolist(), self.close[have].tolist()
        values = self.indicators[have].tolist()
        for i, open_ms, close, ind in zip(have.tolist(), opens, closes, values, strict=True):
            out[self.streams[i]] = {
                "open_time_ms": open_ms,
                "open_time": datetime.fromtimestamp(open_ms / 1000, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "close": close.decode("ascii"),
                "indicators": {
                    name: None if math.isnan(v) else v
                    for name, v in zip(INDICATOR_FIELDS, ind, strict=True)
                },
            }
        return out

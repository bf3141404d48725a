"""Indicators for each candle of a batch, from per-stream incremental state.

The math lives in :mod:`indicators`; this module only orders a batch so that each
``Bank.update`` call sees at most one new close per stream, in time order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

import indicators
from ingestor.candles import INDICATOR_FIELDS, Candles

__all__ = ["Enricher"]


class Enricher:
    """Owns one :class:`indicators.Bank` over every configured stream."""

    def __init__(self, n_streams: int) -> None:
        self.bank = indicators.Bank(n_streams)

    def warm(self, stream_id: int, closes: npt.NDArray[np.float64]) -> None:
        """Load a stream's closed history (oldest first) into the state."""
        self.bank.warm(stream_id, np.ascontiguousarray(closes, dtype=np.float64))

    def enrich(self, candles: Candles) -> Candles:
        """Fill ``candles.indicators`` (N x 8); candles of a stream must be in time order."""
        n = len(candles)
        out = np.full((n, len(INDICATOR_FIELDS)), np.nan)
        if n:
            order = np.argsort(candles.stream_id, kind="stable")
            sids = candles.stream_id[order]
            if n == 1 or bool((sids[1:] != sids[:-1]).all()):  # a live batch: one per stream
                out[order] = self.bank.update(sids, candles.close_f[order])
                candles.indicators = out
                return candles
            order = np.lexsort((candles.open_time, candles.stream_id))
            sids = candles.stream_id[order]
            starts = np.r_[True, sids[1:] != sids[:-1]]
            group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
            rank = np.arange(n) - group_start
            for r in range(int(rank.max()) + 1):
                sel = order[rank == r]
                out[sel] = self.bank.update(candles.stream_id[sel], candles.close_f[sel])
        candles.indicators = out
        return candles

"""LatestCandles: each stream's newest stored row, kept from stored batches for /status."""

from __future__ import annotations

import numpy as np

from ingestor.candles import INDICATOR_FIELDS, Candles
from ingestor.latest import LatestCandles

M = 60_000


def _batch(rows: list[tuple[int, int, str]], indicator: float | None = None) -> Candles:
    """(stream id, open ms, close) rows; indicators all ``indicator`` (NaN when None)."""
    batch = Candles.from_rows(
        [sid for sid, _, _ in rows],
        [[t, "1", "2", "0.5", c, "10", t + M - 1, "100", 7, "5", "50"] for _, t, c in rows],
    )
    value = np.nan if indicator is None else indicator
    batch.indicators = np.full((len(rows), len(INDICATOR_FIELDS)), value)
    return batch


def test_keeps_each_streams_newest_row_whatever_the_batch_order() -> None:
    latest = LatestCandles(["A:1m", "B:1m", "C:1m"])
    assert latest.rows() == {}
    # Stream 0 appears three times out of time order; stream 2 never.
    latest.record(_batch([(0, 2 * M, "1.2"), (1, M, "9.1"), (0, 3 * M, "1.3"), (0, M, "1.1")], 4))
    rows = latest.rows()
    assert set(rows) == {"A:1m", "B:1m"}
    assert rows["A:1m"]["open_time_ms"] == 3 * M and rows["A:1m"]["close"] == "1.3"
    assert rows["A:1m"]["open_time"] == "1970-01-01T00:03:00.000+00:00"
    assert rows["B:1m"]["close"] == "9.1"
    assert rows["A:1m"]["indicators"] == dict.fromkeys(INDICATOR_FIELDS, 4.0)


def test_an_older_batch_never_replaces_a_newer_row_and_nan_is_null() -> None:
    latest = LatestCandles(["A:1m", "B:1m"])
    latest.record(_batch([(0, 5 * M, "5")], 1.0))
    latest.record(_batch([(0, 4 * M, "4"), (1, 4 * M, "44")]))  # a journal replay, say
    rows = latest.rows()
    assert rows["A:1m"]["close"] == "5" and rows["A:1m"]["indicators"]["rsi_14"] == 1.0
    assert rows["B:1m"]["indicators"] == dict.fromkeys(INDICATOR_FIELDS)  # NaN -> None
    latest.record(_batch([]))
    assert latest.rows() == rows

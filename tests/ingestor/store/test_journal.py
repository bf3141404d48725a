"""The journal keeps batches across a crash, in order, and survives a torn tail."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ingestor.candles import Candles
from ingestor.store.journal import Journal

M = 60_000
NAMES = ["BTCUSDT:1m", "ETHUSDT:1m"]


def _batch(first: int, n: int) -> Candles:
    rows = [
        [
            (first + i) * M,
            "1.10",
            "1.20",
            "1.00",
            "1.15",
            "5",
            (first + i) * M + M - 1,
            "5.5",
            i,
            "2",
            "2.2",
        ]
        for i in range(n)
    ]
    c = Candles.from_rows([1] * n, rows)
    c.indicators = np.arange(n * 8, dtype=np.float64).reshape(n, 8)
    c.indicators[0, 0] = np.nan
    return c


def test_records_come_back_in_order_and_exact(tmp_path: Path) -> None:
    j = Journal(tmp_path, NAMES)
    j.append(_batch(0, 3))
    j.append(_batch(3, 2))
    again = Journal(tmp_path, NAMES)  # as after a restart
    assert len(again) == 2
    first = again.peek()
    assert first is not None
    assert first.open_time.tolist() == [0, M, 2 * M]
    assert first.decimals["close_price"].tolist() == [b"1.15"] * 3
    assert first.indicators is not None and np.isnan(first.indicators[0, 0])
    assert first.indicators[1].tolist() == list(range(8, 16))
    again.consume()
    second = again.peek()
    assert second is not None and second.open_time.tolist() == [3 * M, 4 * M]
    again.consume()
    assert again.peek() is None and len(again) == 0
    assert not again.path.exists()


def test_torn_tail_is_ignored(tmp_path: Path) -> None:
    j = Journal(tmp_path, NAMES)
    j.append(_batch(0, 2))
    j.append(_batch(2, 2))
    data = j.path.read_bytes()
    j.path.write_bytes(data[:-7])  # crash in the middle of the second append
    again = Journal(tmp_path, NAMES)
    assert len(again) == 1
    got = again.peek()
    assert got is not None and got.open_time.tolist() == [0, M]


def test_streams_are_recorded_by_name_not_position(tmp_path: Path) -> None:
    Journal(tmp_path, NAMES).append(_batch(0, 2))  # stream id 1 = ETHUSDT:1m here
    reordered = Journal(tmp_path, ["SOLUSDT:1m", "ETHUSDT:1m", "BTCUSDT:1m"])
    got = reordered.peek()
    assert got is not None and got.stream_id.tolist() == [1, 1]
    other_shard = Journal(tmp_path, ["BTCUSDT:1m"])  # ETHUSDT moved to another replica
    dropped = other_shard.peek()
    assert dropped is not None and len(dropped) == 0

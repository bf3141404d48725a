"""Real close series for the indicator tests.

Always the repository's own (``tests/data``); with ``../shared/data`` beside the clone, every
kline series there too (90+, the longest 22,515 candles); without it, long synthetic series from
the simulator's market model take their place, so the long-series checks always run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ingestor.simulator.market import Market
from tests.conftest import data_dir, shared_data

#: Candles in each synthetic series standing in for the shared folder's long ones.
SYNTHETIC_LENGTH = 25_000


def _closes(path: Path) -> np.ndarray | None:
    """Close column of a kline-like CSV (12-column Binance layout, or the 6-column
    real-closes file), skipping a header row; None for anything else."""
    with path.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if not rows:
        return None
    try:
        float(rows[0][0])
    except ValueError:
        rows = rows[1:]  # header
    if not rows or len(rows[0]) not in (6, 12):
        return None
    return np.array([float(r[4]) for r in rows], dtype=np.float64)


def _series(root: Path, prefix: str) -> list[tuple[str, np.ndarray]]:
    out = []
    for path in sorted(root.rglob("*.csv")):
        closes = _closes(path)
        if closes is not None:
            out.append((f"{prefix}/{path.relative_to(root)}", closes))
    return out


def _synthetic() -> list[tuple[str, np.ndarray]]:
    """The simulator's synthetic market, 1m and 1h, for two symbols of different price scale."""
    market, end = Market(), 1_767_225_600_000  # 2026-01-01
    out = []
    for symbol, tf, iv in (("BTCUSDT", "1m", 60_000), ("XRPUSDT", "1h", 3_600_000)):
        rows = market.closed_klines(symbol, tf, end - SYNTHETIC_LENGTH * iv, end)
        out.append((f"synthetic/{symbol}-{tf}", np.array([float(r[4]) for r in rows])))
    return out


def real_series() -> list[tuple[str, np.ndarray]]:
    shared = shared_data()
    extra = _series(shared, "shared") if shared is not None else _synthetic()
    return _series(data_dir(), "tests") + extra


REAL = real_series()

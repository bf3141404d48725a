"""Shared data for the indicator tests: every real close series in the shared data folder."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


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


def real_series() -> list[tuple[str, np.ndarray]]:
    out = []
    for path in sorted(DATA.rglob("*.csv")):
        closes = _closes(path)
        if closes is not None:
            out.append((str(path.relative_to(DATA)), closes))
    return out


REAL = real_series()


@pytest.fixture(scope="session")
def real() -> list[tuple[str, np.ndarray]]:
    if not REAL:
        pytest.fail(f"no real close series under {DATA}")
    return REAL

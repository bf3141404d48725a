"""The batch functions walk time in chunks of ``CHUNK`` columns: results must not depend on
where the chunk boundaries fall (TA-Lib parity across them, 2-D equal to row by row)."""

from __future__ import annotations

import numpy as np
import pytest

import indicators as ind
from indicators._kernels import CHUNK

from .test_indicators_parity import check_against_talib


def _walks(rows: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.array([1e-3, 3e4, 1e7, 50.0, 1.0])[:rows, None]
    walk = scale * np.exp(np.cumsum(rng.normal(0.0, 1e-3, (rows, n)), axis=1))
    return np.ascontiguousarray(np.round(walk / (scale * 1e-5)) * (scale * 1e-5))


# lengths whose last chunk is empty-ish, one column, or full, for every indicator's start
LENGTHS = sorted({CHUNK * m + d for m in (1, 2) for d in (-1, 0, 1, 14, 15, 20, 26, 34, 50, 51)})


@pytest.mark.parametrize("n", LENGTHS)
def test_talib_parity_across_chunk_boundaries(n: int) -> None:
    check_against_talib(_walks(1, n, seed=n)[0])


def test_talib_parity_flat_stretches_across_chunks() -> None:
    x = _walks(2, 3 * CHUNK + 5, seed=1)[1]  # price ~3e4
    x[CHUNK - 30 : CHUNK + 40] = x[CHUNK - 30]  # flat windows straddling a boundary
    x[2 * CHUNK : 2 * CHUNK + 25] = 1e7 / 3  # a 300x spike, then flat, then the walk again
    check_against_talib(x)


def test_2d_equals_row_by_row_over_several_chunks() -> None:
    x = _walks(5, 2 * CHUNK + 777, seed=3)
    together = [ind.sma(x), ind.ema(x), ind.rsi(x), *ind.macd(x), *ind.bollinger(x)]
    for r in range(x.shape[0]):
        alone = [ind.sma(x[r]), ind.ema(x[r]), ind.rsi(x[r]), *ind.macd(x[r]), *ind.bollinger(x[r])]
        scale = np.maximum(1.0, np.abs(x[r]))
        for a, b in zip(together, alone, strict=True):
            np.testing.assert_array_equal(np.isnan(a[r]), np.isnan(b))
            assert np.all(np.abs(np.nan_to_num(a[r] - b)) <= 1e-12 * scale)

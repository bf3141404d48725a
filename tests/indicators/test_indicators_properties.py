"""Property tests: 2-D equals row by row, incremental (Bank) equals batch."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import indicators as ind


def _price_paths(draw: st.DrawFn, rows: int, n: int) -> np.ndarray:
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-8, 1e-3, 1.0, 3e4, 1e7]))
    vol = draw(st.sampled_from([0.0, 1e-6, 1e-3, 3e-2]))
    rng = np.random.default_rng(seed)
    walk = scale * np.exp(np.cumsum(rng.normal(0.0, vol, (rows, n)), axis=1))
    if draw(st.booleans()):  # tick-rounded prices: exact ties, flat stretches
        walk = np.round(walk / (scale * 1e-3)) * (scale * 1e-3)
    return np.ascontiguousarray(walk)


@st.composite
def matrices(draw: st.DrawFn) -> np.ndarray:
    rows = draw(st.integers(1, 5))
    n = draw(st.integers(0, 400))
    return _price_paths(draw, rows, n)


def _all_batch(x: np.ndarray) -> list[np.ndarray]:
    return [
        ind.sma(x),
        ind.ema(x),
        ind.rsi(x),
        *ind.macd(x),
        *ind.bollinger(x),
        ind.sma(x, 7),
        ind.ema(x, 5),
        ind.rsi(x, 3),
    ]


@settings(max_examples=60, deadline=None)
@given(matrices())
def test_2d_equals_row_by_row(x: np.ndarray) -> None:
    together = _all_batch(x)
    for r in range(x.shape[0]):
        alone = _all_batch(x[r])
        for a, b in zip(together, alone, strict=True):
            assert a.shape == x.shape
            np.testing.assert_array_equal(np.isnan(a[r]), np.isnan(b))
            scale = np.maximum(1.0, np.abs(x[r]))
            assert np.all(np.abs(np.nan_to_num(a[r] - b)) <= 1e-12 * scale)


def _bank_reference(x: np.ndarray) -> np.ndarray:
    """Batch outputs in Bank column order, shape (T, 8)."""
    line, sig, _ = ind.macd(x)
    up, mid, low = ind.bollinger(x)
    return np.stack([ind.rsi(x), line, sig, up, mid, low, ind.ema(x), ind.sma(x)], axis=1)


def assert_bank_matches(got: np.ndarray, ref: np.ndarray, close: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    bound = 1e-9 * np.maximum(1.0, np.abs(close))[:, None] * np.ones(8)
    bound[:, 0] = 1e-9  # RSI
    err = np.abs(np.nan_to_num(got - ref))
    assert np.all(err <= bound), f"worst {np.max(err / bound):.3g}x tolerance"


@st.composite
def bank_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    rows = draw(st.integers(1, 4))
    n = draw(st.integers(1, 160))
    x = _price_paths(draw, rows, n)
    warm = np.array([draw(st.integers(0, n)) for _ in range(rows)])
    seed = draw(st.integers(0, 2**32 - 1))
    return x, warm, seed


@settings(max_examples=40, deadline=None)
@given(bank_cases())
def test_incremental_equals_batch(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    """Each stream is warmed with its own (maybe empty) prefix, then the rest arrives in
    random subsets per update call; every output equals batch over the whole series."""
    x, warm, seed = case
    rows, n = x.shape
    rng = np.random.default_rng(seed)
    ids = rng.permutation(rows * 3)[:rows]  # sparse ids inside a bigger bank
    bank = ind.Bank(rows * 3)
    for r in range(rows):
        bank.warm(int(ids[r]), x[r, : warm[r]])
        assert bank.count(int(ids[r])) == warm[r]
    got = np.full((rows, n, 8), np.nan)
    pos = warm.copy()
    while np.any(pos < n):
        live = np.flatnonzero(pos < n)
        pick = live[rng.random(live.size) < 0.7] if live.size > 1 else live
        if pick.size == 0:
            continue
        out = bank.update(ids[pick], x[pick, pos[pick]])
        assert out.shape == (pick.size, 8)
        got[pick, pos[pick]] = out
        pos[pick] += 1
    for r in range(rows):
        ref = _bank_reference(x[r])[warm[r] :]
        assert_bank_matches(got[r, warm[r] :], ref, x[r, warm[r] :])
        assert bank.count(int(ids[r])) == n


@settings(max_examples=20, deadline=None)
@given(bank_cases())
def test_warm_many_equals_warm(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    x, _, _ = case
    rows, n = x.shape
    cut = n // 2
    a, b = ind.Bank(rows), ind.Bank(rows)
    a.warm_many(np.arange(rows), x[:, :cut])
    for r in range(rows):
        b.warm(r, x[r, :cut])
    for t in range(cut, n):
        oa = a.update(np.arange(rows), x[:, t])
        ob = b.update(np.arange(rows), x[:, t])
        # same values up to BLAS rounding (row counts differ between the two warm-ups)
        assert_bank_matches(oa, ob, x[:, t])

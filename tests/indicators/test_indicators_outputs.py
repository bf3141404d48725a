"""``indicators.compute`` is TA-Lib over the series and causal; ``SEED_KLINES`` earlier closes
make every output equal TA-Lib over the whole history (the stated tolerance), on real series,
the simulator's history and hostile synthetic ones."""

from __future__ import annotations

import numpy as np
import pytest
import talib

import indicators
from ingestor.simulator.market import Market
from tests.indicators.conftest import REAL

PRICE_SCALED = ("macd", "macd_signal", *(f for f in indicators.OUTPUT_FIELDS if f != "rsi_14"))


def talib_outputs(x: np.ndarray) -> np.ndarray:
    macd, sig, _ = talib.MACD(x, 12, 26, 9)
    up, mid, low = talib.BBANDS(x, 20, 2.0, 2.0)  # matype SMA, the default
    ref = dict(
        rsi_14=talib.RSI(x, 14), macd=macd, macd_signal=sig, bollinger_upper=up,
        bollinger_middle=mid, bollinger_lower=low, ema_20=talib.EMA(x, 20), sma_50=talib.SMA(x, 50),
    )  # fmt: skip
    return np.stack([ref[f] for f in indicators.OUTPUT_FIELDS], axis=1)


def assert_converged(x: np.ndarray, start: int, what: str) -> None:
    """Computing from ``start - SEED_KLINES`` equals TA-Lib over all of ``x`` from ``start`` on:
    1e-9 of the price (RSI: 1e-9 absolute)."""
    seed = indicators.SEED_KLINES
    ref = talib_outputs(x)[start:]
    got = indicators.compute(x[max(0, start - seed) :])[-(len(x) - start) :]
    for j, f in enumerate(indicators.OUTPUT_FIELDS):
        tol = indicators.TOLERANCE * (1.0 if f == "rsi_14" else np.abs(x[start:]))
        diff = np.abs(got[:, j] - ref[:, j])
        assert np.array_equal(np.isnan(got[:, j]), np.isnan(ref[:, j])), (what, f)
        ok = np.isnan(ref[:, j]) | (diff <= tol)
        assert ok.all(), (what, f, int(np.argmin(ok)), float(np.nanmax(diff)))


def test_compute_equals_talib_and_is_causal() -> None:
    rng = np.random.default_rng(7)
    x = 30_000 + np.cumsum(rng.normal(0, 25, 5000))
    got = indicators.compute(x)
    ref = talib_outputs(x)
    for j, f in enumerate(indicators.OUTPUT_FIELDS):
        np.testing.assert_allclose(got[:, j], ref[:, j], rtol=1e-9, atol=1e-9, err_msg=f)
        assert np.array_equal(np.isnan(got[:, j]), np.isnan(ref[:, j])), f
    prefix = indicators.compute(x[:3333])
    np.testing.assert_allclose(prefix, got[:3333], rtol=1e-12, atol=1e-9)


def test_seed_horizon_is_derived_from_the_tolerance() -> None:
    assert indicators.seed_klines(indicators.TOLERANCE) == indicators.SEED_KLINES
    # a looser tolerance needs fewer closes, a stricter one more; never less than SMA50's window
    assert indicators.seed_klines(1e-6) < indicators.SEED_KLINES < indicators.seed_klines(1e-12)
    assert indicators.seed_klines(1.0) >= 49


def test_seeded_values_equal_talib_over_the_simulators_whole_history() -> None:
    market = Market(seed=3, symbols=("BTCUSDT", "ETHUSDT"), history_start_ms=0)
    iv = 60_000
    t0 = 1_700_000_000_000 // iv * iv
    for sym in market.symbols:
        rows = market.closed_klines(sym, "1m", t0 - 4000 * iv, t0)
        x = np.array([float(r[4]) for r in rows])
        for start in (1, 100, indicators.SEED_KLINES, 1500, 3000):
            assert_converged(x, start, f"{sym} from {start}")


@pytest.mark.parametrize(("name", "closes"), [r for r in REAL if len(r[1]) > 1200])
def test_seeded_values_equal_talib_over_real_history(name: str, closes: np.ndarray) -> None:
    for start in (600, len(closes) // 2, len(closes) - 50):
        assert_converged(closes, start, f"{name} from {start}")


def test_seeded_values_converge_after_a_crash_and_a_flat_market() -> None:
    """Hostile shapes: a 90% crash just before the stored range, and a flat stretch."""
    rng = np.random.default_rng(11)
    x = 100 + np.cumsum(rng.normal(0, 0.3, 3000))
    x[1000:1010] *= np.linspace(1.0, 0.1, 10)
    x[1010:] *= 0.1
    x[2000:2300] = x[1999]
    for start in (1020, 1500, 2310):
        assert_converged(np.abs(x) + 1, start, f"from {start}")

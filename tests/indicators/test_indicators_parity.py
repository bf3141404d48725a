"""Parity with TA-Lib (exact conventions, 1e-9 tolerance) and pandas-ta (second reference).

Tolerance: |ours - talib| <= 1e-9 * max(1, |close|) for price-scale outputs (MACD too) and
<= 1e-9 for RSI; NaN positions identical.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pandas_ta as pta
import pytest
import talib

import indicators as ind
from tests.conftest import shared_data

from .conftest import REAL

TOL = 1e-9


def _check(name: str, ours: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> None:
    ours, ref = np.asarray(ours), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, name
    nan_ours, nan_ref = np.isnan(ours), np.isnan(ref)
    assert np.array_equal(nan_ours, nan_ref), (
        f"{name}: NaN positions differ at {np.flatnonzero(nan_ours != nan_ref)[:10]}"
    )
    ok = ~nan_ref
    err = np.abs(ours[ok] - ref[ok])
    bound = TOL * scale[ok]
    bad = np.flatnonzero(err > bound)
    assert bad.size == 0, f"{name}: {bad.size} values off, worst {np.max(err / bound):.3g}x tol"


def check_against_talib(close: np.ndarray) -> None:
    price = np.maximum(1.0, np.abs(close))
    one = np.ones_like(close)
    _check("sma50", ind.sma(close, 50), talib.SMA(close, 50), price)
    _check("sma5", ind.sma(close, 5), talib.SMA(close, 5), price)
    _check("ema20", ind.ema(close, 20), talib.EMA(close, 20), price)
    _check("ema3", ind.ema(close, 3), talib.EMA(close, 3), price)
    _check("rsi14", ind.rsi(close, 14), talib.RSI(close, 14), one)
    _check("rsi2", ind.rsi(close, 2), talib.RSI(close, 2), one)
    for name, a, b in zip(
        ("macd", "signal", "hist"), ind.macd(close), talib.MACD(close, 12, 26, 9), strict=True
    ):
        _check(name, a, b, price)
    for name, a, b in zip(
        ("upper", "middle", "lower"),
        ind.bollinger(close, 20, 2.0),
        talib.BBANDS(close, 20, 2.0, 2.0),  # matype SMA, the default
        strict=True,
    ):
        _check(name, a, b, price)


def test_real_data_is_there() -> None:
    names = {name for name, _ in REAL}
    assert "tests/real-closes/BTCPERP-1m-first-6000.csv" in names  # the repository's own
    assert sum(name.startswith("tests/") for name in names) >= 6
    if shared_data() is not None:
        assert sum(name.startswith("shared/") for name in names) >= 90  # every kline CSV there
        assert "shared/real-closes/BTCPERP-1m-first-half.csv" in names
    else:
        assert sum(name.startswith("synthetic/") for name in names) == 2  # stand-ins
    assert max(len(c) for _, c in REAL) > 20_000


@pytest.mark.parametrize("name", [name for name, _ in REAL])
def test_talib_parity_real(name: str) -> None:
    close = dict(REAL)[name]
    check_against_talib(close)


def _walk(n: int, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return scale * np.exp(np.cumsum(rng.normal(0.0, 2e-3, n)))


LENGTHS = sorted({n + d for n in (2, 3, 5, 14, 20, 26, 33, 34, 50) for d in (-1, 0, 1)} | {0, 1})

ADVERSARIAL: dict[str, Callable[[int], np.ndarray]] = {
    "constant": lambda n: np.full(n, 123.456),
    "constant_huge": lambda n: np.full(n, 1e7 / 3),
    "rising": lambda n: 100.0 + 0.5 * np.arange(n),
    "falling": lambda n: 1e4 - 0.7 * np.arange(n),
    "tiny": lambda n: _walk(n, 1e-8, 1),
    "huge": lambda n: _walk(n, 1e7, 2),
    "tiny_steps": lambda n: 1.0 + 1e-12 * np.arange(n),
    "flat_then_jump": lambda n: np.where(np.arange(n) < n // 2, 50.0, 51.0),
    "zigzag": lambda n: 100.0 + (np.arange(n) % 2),
}


@pytest.mark.parametrize("kind", sorted(ADVERSARIAL))
@pytest.mark.parametrize("n", LENGTHS)
def test_talib_parity_adversarial(kind: str, n: int) -> None:
    close = np.ascontiguousarray(ADVERSARIAL[kind](n), dtype=np.float64)
    check_against_talib(close)


@pytest.mark.parametrize("kind", sorted(ADVERSARIAL))
def test_talib_parity_adversarial_long(kind: str) -> None:
    check_against_talib(np.ascontiguousarray(ADVERSARIAL[kind](5000), dtype=np.float64))


def test_rsi_edge_values_are_talibs() -> None:
    assert np.all(ind.rsi(np.full(30, 5.0))[14:] == 0.0)  # no move at all: 0
    assert np.all(ind.rsi(np.arange(30.0))[14:] == 100.0)  # no losses: 100
    assert np.all(ind.rsi(-np.arange(30.0))[14:] == 0.0)  # no gains: 0
    np.testing.assert_array_equal(talib.RSI(np.full(30, 5.0))[14:], 0.0)


def test_lookbacks() -> None:
    x = _walk(200, 100.0, 3)
    first = {
        "sma": ind.sma(x),
        "ema": ind.ema(x),
        "rsi": ind.rsi(x),
        "macd": ind.macd(x)[0],
        "signal": ind.macd(x)[1],
        "bb": ind.bollinger(x)[0],
    }
    got = {k: int(np.argmax(~np.isnan(v))) for k, v in first.items()}
    assert got == {"sma": 49, "ema": 19, "rsi": 14, "macd": 33, "signal": 33, "bb": 19}


# -- pandas-ta, the second reference (its own pandas code, talib=False) ----------------------
# sma, ema (its default SMA-seeded "presma" mode) and bbands with ddof=0 follow TA-Lib's
# definitions, so they must agree everywhere.  Its rsi (ewm seeded with the first move, values
# from index 1) and macd (fast EMA seeded at fast-1, line from index slow-1, signal seeded
# from there) start differently; the difference decays geometrically, so only the tail is
# compared.


def _pta(close: np.ndarray) -> dict[str, np.ndarray]:
    s = pd.Series(close)
    bb = pta.bbands(s, length=20, lower_std=2.0, upper_std=2.0, ddof=0, talib=False)
    m = pta.macd(s, 12, 26, 9, talib=False)
    return {
        "sma": pta.sma(s, 50, talib=False).to_numpy(float),
        "ema": pta.ema(s, 20, talib=False).to_numpy(float),
        "rsi": pta.rsi(s, 14, talib=False).to_numpy(float),
        "macd": m["MACD_12_26_9"].to_numpy(float),
        "signal": m["MACDs_12_26_9"].to_numpy(float),
        "upper": bb["BBU_20_2.0_2.0"].to_numpy(float),
        "middle": bb["BBM_20_2.0_2.0"].to_numpy(float),
        "lower": bb["BBL_20_2.0_2.0"].to_numpy(float),
    }


PTA_SERIES = [name for name, c in REAL if len(c) >= 1000]


@pytest.mark.parametrize("name", PTA_SERIES)
def test_pandas_ta_parity_real(name: str) -> None:
    close = dict(REAL)[name]
    ref = _pta(close)
    price = np.maximum(1.0, np.abs(close))
    up, mid, low = ind.bollinger(close)
    line, sig, _ = ind.macd(close)
    _check("sma", ind.sma(close), ref["sma"], price)
    _check("ema", ind.ema(close), ref["ema"], price)
    _check("upper", up, ref["upper"], price)
    _check("middle", mid, ref["middle"], price)
    _check("lower", low, ref["lower"], price)
    tail = slice(600, None)  # pandas-ta's different seeds have decayed below 1e-9 by then
    _check("rsi tail", ind.rsi(close)[tail], ref["rsi"][tail], np.ones_like(close[tail]))
    _check("macd tail", line[tail], ref["macd"][tail], price[tail])
    _check("signal tail", sig[tail], ref["signal"][tail], price[tail])
    # ...and the documented differences are real: pandas-ta has RSI values before index 14
    # and a MACD line before index 33, where TA-Lib (and we) have NaN.
    assert not np.isnan(ref["rsi"][5]) and np.isnan(ind.rsi(close)[5])
    assert not np.isnan(ref["macd"][30]) and np.isnan(line[30])


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        ind.sma(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        ind.ema(np.zeros(10), period=1)

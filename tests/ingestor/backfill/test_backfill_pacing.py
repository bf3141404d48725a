"""WeightPacer admits no request past its budget within a window; compute_indicators is
TA-Lib's over the whole series and causal (a prefix gives the same values to the last bits)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import talib

from ingestor.backfill.pacing import WeightPacer
from ingestor.backfill.run import compute_indicators
from ingestor.candles import INDICATOR_FIELDS


async def test_pacer_never_exceeds_budget_and_waits_for_the_window() -> None:
    window = 0.3
    pacer = WeightPacer(10, window_s=window)
    sent: list[tuple[float, int]] = []  # (response time, weight)
    peak = 0

    async def request() -> None:
        nonlocal peak
        await pacer.acquire(2)
        peak = max(peak, pacer.used())
        await asyncio.sleep(0.01)
        sent.append((time.monotonic(), 2))
        await pacer.release(2, None)

    t0 = time.monotonic()
    await asyncio.gather(*(request() for _ in range(15)))
    elapsed = time.monotonic() - t0
    assert peak <= 10
    assert pacer.requests == 15 and pacer.weight_sent == 30
    assert elapsed >= 2 * window  # 30 weight at 10 per window: at least two full waits
    assert pacer.waited_s > 0


async def test_pacer_counts_others_weight_from_the_header() -> None:
    pacer = WeightPacer(10, window_s=0.2)
    await pacer.acquire(2)
    await pacer.release(2, 9)  # someone else used 7 on this IP
    assert pacer.used() == 9
    t0 = time.monotonic()
    await pacer.acquire(2)  # 9 + 2 > 10: must wait for the window
    assert time.monotonic() - t0 >= 0.15
    assert pacer.max_header == 9


def test_pacer_rejects_a_budget_below_one_request() -> None:
    with pytest.raises(ValueError):
        WeightPacer(1)


def test_indicators_equal_talib_and_are_causal() -> None:
    rng = np.random.default_rng(7)
    x = 30_000 + np.cumsum(rng.normal(0, 25, 5000))
    got = compute_indicators(x)
    macd, sig, _ = talib.MACD(x, 12, 26, 9)
    up, mid, low = talib.BBANDS(x, 20, 2.0, 2.0)  # matype SMA, the default
    ref = dict(
        rsi_14=talib.RSI(x, 14), macd=macd, macd_signal=sig, bollinger_upper=up,
        bollinger_middle=mid, bollinger_lower=low, ema_20=talib.EMA(x, 20), sma_50=talib.SMA(x, 50),
    )  # fmt: skip
    for j, f in enumerate(INDICATOR_FIELDS):
        np.testing.assert_allclose(got[:, j], ref[f], rtol=1e-9, atol=1e-9, err_msg=f)
        assert np.array_equal(np.isnan(got[:, j]), np.isnan(ref[f])), f
    prefix = compute_indicators(x[:3333])
    np.testing.assert_allclose(prefix, got[:3333], rtol=1e-12, atol=1e-9)

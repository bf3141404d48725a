"""The eight stored indicators: their periods (defined here once), one batch function computing
them all, and how many earlier closes a computation needs to equal TA-Lib over all history.

:func:`compute` is the only place that turns a close series into the stored columns;
:class:`indicators.Bank` keeps the same outputs incrementally with the same periods.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .batch import bollinger, ema, macd, rsi, sma

__all__ = [
    "BOLLINGER_K",
    "BOLLINGER_PERIOD",
    "EMA_PERIOD",
    "MACD_FAST",
    "MACD_SIGNAL",
    "MACD_SLOW",
    "OUTPUT_FIELDS",
    "PRICE_SPREAD",
    "RSI_MOVE_RATIO",
    "RSI_PERIOD",
    "SEED_KLINES",
    "SMA_PERIOD",
    "TOLERANCE",
    "compute",
    "seed_klines",
]

RSI_PERIOD: Final = 14
MACD_FAST: Final = 12
MACD_SLOW: Final = 26
MACD_SIGNAL: Final = 9
BOLLINGER_PERIOD: Final = 20
BOLLINGER_K: Final = 2.0
EMA_PERIOD: Final = 20
SMA_PERIOD: Final = 50

#: Stored indicator names, in the column order of :func:`compute` and ``Bank.update``.
OUTPUT_FIELDS: Final = (
    "rsi_14",
    "macd",
    "macd_signal",
    "bollinger_upper",
    "bollinger_middle",
    "bollinger_lower",
    "ema_20",
    "sma_50",
)

#: Agreement wanted with TA-Lib over a stream's whole history: relative to the price for the
#: price-scale outputs (and MACD), absolute for RSI.
TOLERANCE: Final = 1e-9
#: Assumed bound of (price range over a seed) / price: how far two EMA seeds can differ.
PRICE_SPREAD: Final = 10.0
#: Assumed bound of (largest single move) / (average absolute move) for the RSI's averages.
RSI_MOVE_RATIO: Final = 1000.0


def compute(closes: ArrayLike) -> NDArray[np.float64]:
    """(T,) closes -> (T, 8) stored indicators in :data:`OUTPUT_FIELDS` order (NaN before each
    lookback): TA-Lib's values over exactly this series."""
    x = np.ascontiguousarray(closes, dtype=np.float64)
    line, signal, _ = macd(x, MACD_FAST, MACD_SLOW, MACD_SIGNAL)
    upper, middle, lower = bollinger(x, BOLLINGER_PERIOD, BOLLINGER_K)
    cols = (
        rsi(x, RSI_PERIOD),
        line,
        signal,
        upper,
        middle,
        lower,
        ema(x, EMA_PERIOD),
        sma(x, SMA_PERIOD),
    )
    return np.stack(cols, axis=-1)


def _decay_steps(ratio: float, error: float, tolerance: float) -> int:
    """Steps ``n`` with ``error * ratio**n <= tolerance``."""
    return math.ceil(math.log(tolerance / error) / math.log(ratio))


def seed_klines(tolerance: float = TOLERANCE) -> int:
    """Closes to compute over before the first value that must equal TA-Lib over the whole
    history (to ``tolerance``): the horizon of the infinite-memory indicators.

    Two runs of ``s = r*s + (1-r)*x`` over the same closes that start from different states
    differ by ``r**n`` times their first difference after ``n`` steps. So a computation that
    starts ``n`` closes earlier than the first stored value (TA-Lib seeding it with an SMA
    there) is within ``tolerance`` of one over the whole history once

    * EMA20, MACD's EMAs (r = 1 - 2/(p+1); the slowest, 26, dominates): a first difference of at
      most :data:`PRICE_SPREAD` prices, ``PRICE_SPREAD * r26**n <= tol`` (relative to price);
    * MACD signal (EMA9 of the line): the line's error (both EMAs, <= 2 spreads) decays as
      ``r26**n``; the EMA9 passes a geometric error ``r26**n`` with gain
      ``k9 / (1 - (1-k9)/r26) < 1.5``, and its own seed error decays faster (``r9 < r26``): at
      most ``(2*1.5 + 2) * PRICE_SPREAD * r26**n``;
    * RSI (Wilder, r = 13/14, absolute on the 0..100 scale): the averages' error is at most one
      move, so RSI's is at most ``100 * RSI_MOVE_RATIO * r**n``.

    Each is counted after its own lookback (the first value exists only then); the largest is
    the horizon, and at least SMA50's window. Where a stream's history is shorter, computing
    from its first kline *is* TA-Lib over the whole history.
    """
    r_slow = 1.0 - 2.0 / (MACD_SLOW + 1)
    r_ema = 1.0 - 2.0 / (EMA_PERIOD + 1)
    r_rsi = 1.0 - 1.0 / RSI_PERIOD
    k_sig = 2.0 / (MACD_SIGNAL + 1)
    gain = k_sig / (1.0 - (1.0 - k_sig) / r_slow)
    steps = (
        _decay_steps(r_ema, PRICE_SPREAD, tolerance) + EMA_PERIOD - 1,
        _decay_steps(r_slow, (2 * gain + 2) * PRICE_SPREAD, tolerance)
        + MACD_SLOW
        + MACD_SIGNAL
        - 2,
        _decay_steps(r_rsi, 100.0 * RSI_MOVE_RATIO, tolerance) + RSI_PERIOD,
        SMA_PERIOD - 1,
    )
    return max(steps)


#: :func:`seed_klines` at :data:`TOLERANCE`: closes fetched (not stored) before the first
#: stored candle of a computation.
SEED_KLINES: Final = seed_klines()

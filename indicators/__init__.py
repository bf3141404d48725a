"""TA-Lib-exact technical indicators in vectorized numpy, batch and incremental.

Pure math: numpy only, no I/O.  Batch functions take a float64 array, 1-D (one series) or
2-D (streams x time, computed along the last axis for all rows at once), and return arrays of
the same shape with NaN wherever TA-Lib has no value yet (its lookback), never 0 or a partial
average.  :class:`Bank` keeps the same indicators incrementally for many streams.

Conventions (TA-Lib's, checked against ``talib`` by the tests; lookback = index of the first
value):

* ``sma(close, p)``: mean of the last ``p`` closes.  Lookback ``p - 1`` (49 for SMA50).
* ``ema(close, p)``: ``alpha = 2/(p+1)``, seeded at index ``p - 1`` with the SMA of the first
  ``p`` closes.  Lookback ``p - 1`` (19 for EMA20).
* ``rsi(close, p)``: Wilder's smoothing (``avg = (avg*(p-1) + x)/p``) of gains and losses,
  seeded with the simple averages of the first ``p`` moves; ``100*gain/(gain+loss)``, which
  is 100 when there are no losses and 0 when both averages are 0 (no move at all).
  Lookback ``p`` (14).
* ``macd(close, fast, slow, signal)``: TA-Lib seeds the fast EMA at the slow EMA's seed
  index ``slow - 1`` from the SMA of the ``fast`` closes ending there (not at ``fast - 1``);
  the signal line is an EMA of the MACD line seeded with the SMA of its first ``signal``
  values; histogram = MACD - signal.  All three have lookback ``slow + signal - 2`` (33 for
  12/26/9), the MACD line included.  ``slow < fast`` is swapped, as TA-Lib does.
* ``bollinger(close, p, k)``: middle = SMA, bands = middle +/- ``k`` x population std
  (ddof=0).  Lookback ``p - 1`` (19).  TA-Lib's STDDEV uses running sums of ``x`` and
  ``x**2``; we sum centred values per window instead (no cancellation at 1e7 prices), so
  results agree within rounding, not bit for bit.

pandas-ta as second reference (checked by the tests, with ``talib=False``: with TA-Lib
installed its default ``talib=True`` simply calls TA-Lib): ``sma``, ``ema`` (default
``presma=True``: SMA seed) and ``bbands(ddof=0)`` agree with TA-Lib; ``ema(presma=False)``
seeds with the first close and has values from index 0, converging later.  Its ``rsi`` is an
``ewm(alpha=1/p, adjust=False)`` of gains/losses seeded with the first move, with values from
index 1; its ``macd`` seeds the fast EMA at ``fast - 1`` (TA-Lib: ``slow - 1``) and has a
MACD line from index ``slow - 1`` (TA-Lib: ``slow + signal - 2``), so its signal is seeded
earlier too.  Those differences decay geometrically; the tests compare them after 600 values.

The stored outputs, their periods, :func:`compute` (all eight over a series) and
``SEED_KLINES`` (how many earlier closes make them equal TA-Lib over a whole history) live in
:mod:`indicators.outputs`.
"""

from .bank import REANCHOR_EVERY, Bank
from .batch import bollinger, ema, macd, rsi, sma
from .outputs import OUTPUT_FIELDS, SEED_KLINES, TOLERANCE, compute, seed_klines

__all__ = [
    "OUTPUT_FIELDS",
    "REANCHOR_EVERY",
    "SEED_KLINES",
    "TOLERANCE",
    "Bank",
    "bollinger",
    "compute",
    "ema",
    "macd",
    "rsi",
    "seed_klines",
    "sma",
]

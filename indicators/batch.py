"""Batch indicators over whole series, TA-Lib conventions (see the package docstring).

Every function takes a float64 array, 1-D (one series) or 2-D (streams x time, computed
along the last axis for all rows at once), and returns arrays of the same shape with NaN
wherever TA-Lib has no value yet.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels import linear_recurrence, recurrence_buffer, rolling_bands, rolling_mean

__all__ = ["bollinger", "ema", "macd", "rsi", "sma"]

Array = NDArray[np.float64]


def _as_2d(close: ArrayLike) -> tuple[Array, Callable[[Array], Array]]:
    """View ``close`` as ``(rows, time)`` float64 and return a function restoring its shape."""
    arr = np.ascontiguousarray(close, dtype=np.float64)
    if arr.ndim == 1:
        return arr[None, :], lambda out: out[0]
    if arr.ndim == 2:
        return arr, lambda out: out
    raise ValueError(f"close must be 1-D or 2-D, got {arr.ndim}-D")


def _check_period(name: str, value: int, minimum: int = 2) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _nan(shape: tuple[int, ...], lookback: int) -> Array:
    """Uninitialised output with TA-Lib's lookback already NaN."""
    out = np.empty(shape)
    out[:, : min(lookback, shape[1])] = np.nan
    return out


def _ema_2d(x: Array, period: int, start: int, out: Array) -> None:
    """Write into ``out[:, start+period-1:]`` the EMA of ``x[:, start:]`` seeded by its SMA."""
    seed_at = start + period - 1
    if x.shape[1] <= seed_at:
        return
    k = 2.0 / (period + 1)
    seed = x[:, start : seed_at + 1].sum(axis=1) / period
    out[:, seed_at] = seed
    n = x.shape[1] - seed_at - 1
    buf = recurrence_buffer(x.shape[0], n)
    buf[:, :n] = x[:, seed_at + 1 :]
    out[:, seed_at + 1 :] = linear_recurrence(buf, n, 1.0 - k, k, seed)


def sma(close: ArrayLike, period: int = 50) -> Array:
    """Simple moving average; lookback ``period - 1``."""
    period = _check_period("period", period)
    x, restore = _as_2d(close)
    if x.shape[1] < period:
        return restore(np.full(x.shape, np.nan))
    out = rolling_mean(x, period)
    out[:, : period - 1] = np.nan
    return restore(out)


def ema(close: ArrayLike, period: int = 20) -> Array:
    """EMA with ``alpha = 2/(period+1)`` seeded by the SMA of the first ``period`` values;
    lookback ``period - 1``."""
    period = _check_period("period", period)
    x, restore = _as_2d(close)
    out = _nan(x.shape, period - 1)
    _ema_2d(x, period, 0, out)
    return restore(out)


def rsi(close: ArrayLike, period: int = 14) -> Array:
    """Wilder RSI seeded by simple averages of the first ``period`` gains/losses;
    lookback ``period``. 0 when the averages are both 0 (no moves), 100 with no losses."""
    period = _check_period("period", period)
    x, restore = _as_2d(close)
    rows, t = x.shape
    out = _nan(x.shape, period)
    if t <= period:
        return restore(out)
    # gains of the first `period` moves seed the averages; later moves go to the recurrence
    d = x[:, 1 : period + 1] - x[:, :period]
    seed = np.concatenate([np.maximum(d, 0.0).sum(axis=1), np.maximum(-d, 0.0).sum(axis=1)])
    seed /= period
    n = t - period - 1
    buf = recurrence_buffer(2 * rows, n)
    np.subtract(x[:, period + 1 :], x[:, period:-1], out=buf[:rows, :n])
    np.negative(buf[:rows, :n], out=buf[rows:, :n])
    np.maximum(buf, 0.0, out=buf)
    avg = np.empty((2 * rows, n + 1))
    avg[:, 0] = seed
    avg[:, 1:] = linear_recurrence(buf, n, (period - 1) / period, 1.0 / period, seed)
    gain, loss = avg[:rows], avg[rows:]
    loss += gain  # total movement
    value = out[:, period:]
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(gain, loss, out=value)
    value *= 100.0
    value[loss == 0.0] = 0.0  # no move at all in the averages: TA-Lib answers 0
    return restore(out)


def macd(
    close: ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[Array, Array, Array]:
    """MACD line, signal line and histogram, as TA-Lib computes them.

    The fast EMA is seeded at the slow EMA's seed index (``slow - 1``) from the SMA of the
    ``fast`` closes ending there; the signal EMA is seeded by the SMA of the first ``signal``
    MACD values. All three outputs start at index ``slow + signal - 2`` (33 for 12/26/9).
    """
    fast = _check_period("fast", fast)
    slow = _check_period("slow", slow)
    signal = _check_period("signal", signal, minimum=1)
    if slow < fast:  # TA-Lib swaps them silently
        fast, slow = slow, fast
    x, restore = _as_2d(close)
    rows, t = x.shape
    start = slow + signal - 2
    macd_line, sig, hist = (_nan(x.shape, start) for _ in range(3))
    if t > start:
        line = np.empty((rows, t))
        slow_ema = np.empty((rows, t))
        _ema_2d(x, fast, slow - fast, line)
        _ema_2d(x, slow, 0, slow_ema)
        line[:, slow - 1 :] -= slow_ema[:, slow - 1 :]
        _ema_2d(line, signal, slow - 1, sig)
        macd_line[:, start:] = line[:, start:]
        np.subtract(macd_line[:, start:], sig[:, start:], out=hist[:, start:])
    return restore(macd_line), restore(sig), restore(hist)


def bollinger(close: ArrayLike, period: int = 20, k: float = 2.0) -> tuple[Array, Array, Array]:
    """Bollinger bands ``(upper, middle, lower)``: SMA +/- ``k`` population std (ddof=0);
    lookback ``period - 1``."""
    period = _check_period("period", period)
    x, restore = _as_2d(close)
    if x.shape[1] < period:
        return (
            restore(np.full(x.shape, np.nan)),
            restore(np.full(x.shape, np.nan)),
            restore(np.full(x.shape, np.nan)),
        )
    upper, middle, lower = rolling_bands(x, period, float(k))
    for band in (upper, middle, lower):
        band[:, : period - 1] = np.nan
    return restore(upper), restore(middle), restore(lower)

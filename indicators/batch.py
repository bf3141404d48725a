"""Batch indicators over whole series, TA-Lib conventions (see the package docstring).

Every function takes a float64 array, 1-D (one series) or 2-D (streams x time, computed
along the last axis for all rows at once), and returns arrays of the same shape with NaN
wherever TA-Lib has no value yet.

Each function walks the time axis in chunks of ``CHUNK`` columns, carrying its state (EMA
values, Wilder averages) from chunk to chunk, and writes every output exactly once: the
intermediates of a chunk stay in cache instead of making whole-array passes through memory.
Chunk boundaries do not depend on the number of rows, so a 2-D call equals row-by-row calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels import CHUNK, Recurrence, chunk_width, padded, window_matrix

__all__ = ["bollinger", "ema", "macd", "rsi", "sma"]

Array = NDArray[np.float64]

_NONZERO = float(np.finfo(np.float64).smallest_subnormal)


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


def _chunks(begin: int, end: int, width: int) -> Iterator[tuple[int, int]]:
    """``(first column, columns)`` of each chunk of ``begin .. end-1``."""
    for a in range(begin, end, width):
        yield a, min(width, end - a)


def _window_means(x: Array, p: int) -> Iterator[tuple[int, int, Array, Array]]:
    """Rolling means of ``p`` values, chunk by chunk: yields ``(a, n, ref, s)`` for output
    columns ``a .. a+n-1``; the window ending at ``a+j`` has mean ``ref + s[:, p+j] - s[:, j]``.

    ``s`` are running means of ``x - ref`` (``ref``: a close of the chunk), restarted at every
    chunk ``p`` columns early, so each difference cancels at most ``CHUNK + p`` terms of
    chunk-local size, never price-level ones.  ``s`` is scratch, valid until the next chunk.
    """
    rows, t = x.shape
    width = min(CHUNK, t - p + 1)
    rec = Recurrence(rows, chunk_width(width, extra=p), 1.0, 1.0 / p, np.zeros(rows))
    for a, n in _chunks(p - 1, t, width):
        m = n + p
        if a < p:  # first chunk: a virtual zero move before column 0
            ref = x[:, :1]
            rec.u[:, 0] = 0.0
            np.subtract(x[:, : a + n], ref, out=rec.u[:, 1:m])
        else:
            ref = x[:, a - p : a - p + 1]
            np.subtract(x[:, a - p : a + n], ref, out=rec.u[:, :m])
        rec.carry = np.zeros(rows)
        yield a, n, ref, rec.step(m)


def sma(close: ArrayLike, period: int = 50) -> Array:
    """Simple moving average; lookback ``period - 1``."""
    p = _check_period("period", period)
    x, restore = _as_2d(close)
    out = _nan(x.shape, p - 1)
    if x.shape[1] < p:
        return restore(out)
    for a, n, ref, s in _window_means(x, p):
        window = out[:, a : a + n]
        np.subtract(s[:, p : n + p], s[:, :n], out=window)
        window += ref
    return restore(out)


def ema(close: ArrayLike, period: int = 20) -> Array:
    """EMA with ``alpha = 2/(period+1)`` seeded by the SMA of the first ``period`` values;
    lookback ``period - 1``."""
    p = _check_period("period", period)
    x, restore = _as_2d(close)
    rows, t = x.shape
    out = _nan(x.shape, p - 1)
    if t < p:
        return restore(out)
    k = 2.0 / (p + 1)
    seed = x[:, :p].sum(axis=1) / p
    out[:, p - 1] = seed
    if t > p:
        rec = Recurrence(rows, chunk_width(t - p), 1.0 - k, k, seed)
        for a, n in _chunks(p, t, rec.width):
            rec.u[:, :n] = x[:, a : a + n]
            out[:, a : a + n] = rec.step(n)
    return restore(out)


def rsi(close: ArrayLike, period: int = 14) -> Array:
    """Wilder RSI seeded by simple averages of the first ``period`` gains/losses;
    lookback ``period``. 0 when the averages are both 0 (no moves), 100 with no losses.

    Wilder averages of the moves ``d`` and of their sizes ``|d|`` share one recurrence
    (stacked rows): gain = (avg|d| + avg d)/2 and gain + loss = avg|d|, so no losses give
    exactly 100 (both averages are the same numbers) and no gains exactly 0.
    """
    p = _check_period("period", period)
    x, restore = _as_2d(close)
    rows, t = x.shape
    out = _nan(x.shape, p)
    if t <= p:
        return restore(out)
    d = x[:, 1 : p + 1] - x[:, :p]
    move0 = d.sum(axis=1) / p
    size0 = np.abs(d).sum(axis=1) / p
    out[:, p] = (size0 + move0) / np.maximum(size0, _NONZERO) * 50.0
    if t > p + 1:
        rec = Recurrence(
            2 * rows, chunk_width(t - p - 1), (p - 1) / p, 1.0 / p, np.concatenate([move0, size0])
        )
        for a, n in _chunks(p + 1, t, rec.width):
            move, size = rec.u[:rows, :n], rec.u[rows:, :n]
            np.subtract(x[:, a : a + n], x[:, a - 1 : a + n - 1], out=move)
            np.abs(move, out=size)
            y = rec.step(n)
            move, size = y[:rows], y[rows:]
            np.add(size, move, out=move)  # twice the average gain
            np.maximum(size, _NONZERO, out=size)  # 0 only with no move at all: 0/_NONZERO = 0
            np.divide(move, size, out=move)
            np.multiply(move, 50.0, out=out[:, a : a + n])
    return restore(out)


def macd(
    close: ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[Array, Array, Array]:
    """MACD line, signal line and histogram, as TA-Lib computes them.

    The fast EMA is seeded at the slow EMA's seed index (``slow - 1``) from the SMA of the
    ``fast`` closes ending there; the signal EMA is seeded by the SMA of the first ``signal``
    MACD values. All three outputs start at index ``slow + signal - 2`` (33 for 12/26/9).
    Both EMAs and the signal run chunk by chunk together; the signal starts ``signal - 1``
    columns into the first chunk.
    """
    fast = _check_period("fast", fast)
    slow = _check_period("slow", slow)
    signal = _check_period("signal", signal, minimum=1)
    if slow < fast:  # TA-Lib swaps them silently
        fast, slow = slow, fast
    x, restore = _as_2d(close)
    rows, t = x.shape
    start = slow + signal - 2
    line_out, sig_out, hist_out = (_nan(x.shape, start) for _ in range(3))
    if t <= start:
        return restore(line_out), restore(sig_out), restore(hist_out)
    kf, ks, kg = 2.0 / (fast + 1), 2.0 / (slow + 1), 2.0 / (signal + 1)
    first = x[:, slow - fast : slow].sum(axis=1) / fast - x[:, :slow].sum(axis=1) / slow
    skip = signal - 1  # line values before the signal's recurrence starts
    width = chunk_width(t - slow, skip)
    ef = Recurrence(rows, width, 1.0 - kf, kf, x[:, slow - fast : slow].sum(axis=1) / fast)
    es = Recurrence(rows, width, 1.0 - ks, ks, x[:, :slow].sum(axis=1) / slow)
    sg: Recurrence | None = None
    line_buf = np.empty((rows, width))
    for a, n in _chunks(slow, t, width):
        ef.u[:, :n] = x[:, a : a + n]
        es.u[:, :n] = x[:, a : a + n]
        line = line_buf[:, :n]
        np.subtract(ef.step(n), es.step(n), out=line)
        if sg is None:  # first chunk: seed the signal with the first `signal` line values
            head = np.concatenate([first[:, None], line[:, :skip]], axis=1)
            seed = head.sum(axis=1) / signal
            sg = Recurrence(rows, width, 1.0 - kg, kg, seed)
            line_out[:, start] = head[:, -1]
            sig_out[:, start] = seed
            hist_out[:, start] = head[:, -1] - seed
            line, a, n = line[:, skip:], a + skip, n - skip
            if n == 0:
                continue
        line_out[:, a : a + n] = line
        sg.u[:, :n] = line
        ys = sg.step(n)
        sig_out[:, a : a + n] = ys
        np.subtract(line, ys, out=hist_out[:, a : a + n])
    return restore(line_out), restore(sig_out), restore(hist_out)


def bollinger(close: ArrayLike, period: int = 20, k: float = 2.0) -> tuple[Array, Array, Array]:
    """Bollinger bands ``(upper, middle, lower)``: SMA +/- ``k`` population std (ddof=0);
    lookback ``period - 1``.

    Time is cut into blocks of ``period`` columns; a window ending in block ``b`` spans
    blocks ``b-1`` and ``b``, whose ``2*period`` closes are centred on block ``b``'s first
    close and turned into the means of ``d`` and ``d^2`` by one matrix product.  That close
    lies inside every window ending in block ``b``, so ``|d|`` is at most the window's range
    and variance = E[d^2] - E[d]^2 only cancels at the scale of the window's own spread (a
    flat window gives exactly 0, a price spike elsewhere does not matter).
    """
    p = _check_period("period", period)
    k = float(k)
    x, restore = _as_2d(close)
    rows, t = x.shape
    upper, middle, lower = (_nan(x.shape, p - 1) for _ in range(3))
    if t < p:
        return restore(upper), restore(middle), restore(lower)
    span = max(1, CHUNK // p)  # blocks per chunk
    mat = window_matrix(p)
    item = x.itemsize
    bufs: tuple[Array, Array, Array] | None = None
    for a in range(0, t, span * p):
        nb = min(span, -(-(t - a) // p))
        n = min(nb * p, t - a)
        lo, hi = a - p, a + nb * p
        # first or last chunk: extend the closes with the edge values
        base = x[:, lo:] if lo >= 0 and hi <= t else padded(x, lo, hi)
        windows = np.lib.stride_tricks.as_strided(
            base, (rows, nb, 2 * p), (base.strides[0], p * item, item), writeable=False
        )
        ref = base[:, p : (nb + 1) * p : p, None]  # first close of the window's 2nd block
        if bufs is None or bufs[0].shape[2] != nb:
            bufs = (
                np.empty((2, rows, nb, 2 * p)),
                np.empty((2, rows, nb, p)),
                np.empty((rows, nb, p)),
            )
        dev, means, tmp = bufs
        np.subtract(windows, ref, out=dev[0])
        np.multiply(dev[0], dev[0], out=dev[1])
        np.matmul(dev.reshape(-1, 2 * p), mat, out=means.reshape(-1, p))
        mean, sq = means[0], means[1]
        np.multiply(mean, mean, out=tmp)
        np.subtract(sq, tmp, out=sq)  # variance, cancelling at most range**2 terms
        np.maximum(sq, 0.0, out=sq)
        np.sqrt(sq, out=sq)
        sq *= k
        mean += ref
        mid = mean.reshape(rows, -1)[:, :n]
        band = sq.reshape(rows, -1)[:, :n]
        middle[:, a : a + n] = mid
        np.add(mid, band, out=upper[:, a : a + n])
        np.subtract(mid, band, out=lower[:, a : a + n])
    for out in (upper, middle, lower):
        out[:, : p - 1] = np.nan
    return restore(upper), restore(middle), restore(lower)

"""Vectorized building blocks shared by the batch indicators (numpy only).

The kernels work on 2-D ``(streams, time)`` float64 arrays and avoid any Python loop over
time steps by turning short stretches of time into small matrix products, which BLAS runs
at close to memory speed:

* :func:`linear_recurrence` solves ``y[t] = c*y[t-1] + k*u[t]`` (every EMA and Wilder
  average).  Time is cut into blocks of ``_BLOCK`` steps; the value at the end of each block
  is a dot product, the block-to-block carries form the same recurrence with factor
  ``c**_BLOCK`` (solved recursively), each carry is folded into its block's first input, and
  one product with the lower-triangular matrix of powers of ``c`` yields every value.  Only
  powers ``c**j`` with ``j <= _BLOCK`` appear, so nothing grows or cancels (a closed form
  with cumulative products would), and the result stays within a few ulp of TA-Lib's loop.
* :class:`Recurrence` is the same recurrence for the batch indicators, fed one chunk of
  ``CHUNK`` columns at a time so that every intermediate stays in cache (a pass over a
  whole 48 x 129,600 array goes to memory, one over a chunk does not).  Inside a chunk the
  block carries are one small matrix product, and the last value is carried to the next
  chunk.
* :func:`window_matrix` turns windows of ``2p`` values (two blocks of ``p``) into the
  ``p`` rolling means ending in the second block: every window sum adds exactly the ``p``
  terms of its window, so there is no cumsum-difference cancellation at all (Bollinger's
  variance needs that: a flat window must give a std of 0 to within rounding).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CHUNK",
    "Recurrence",
    "chunk_width",
    "linear_recurrence",
    "padded",
    "recurrence_buffer",
    "window_matrix",
]

Array = NDArray[np.float64]

_BLOCK = 32  # time steps per matrix product in linear_recurrence
_TINY = 1e-290  # powers below this are flushed to 0 (avoids slow subnormal arithmetic)
_STEP = 16  # time steps per block in Recurrence (its matrix products stay small and fast)
CHUNK = 2048  # columns per chunk: a 48-stream chunk's scratch arrays stay in L2/L3


@lru_cache(maxsize=64)
def _power_matrix(c: float, k: float, b: int, tiny: float = _TINY) -> Array:
    """``M[i, j] = k * c**(j-i)`` for ``j >= i``, else 0; entries below ``tiny`` are 0."""
    lag = np.arange(b)[None, :] - np.arange(b)[:, None]
    with np.errstate(under="ignore"):
        m = np.where(lag >= 0, k * c ** np.maximum(lag, 0).astype(np.float64), 0.0)
    m[np.abs(m) < tiny] = 0.0
    m.setflags(write=False)
    return m


@lru_cache(maxsize=16)
def window_matrix(p: int) -> Array:
    """``(2p, p)`` matrix: row ``i`` of two consecutive blocks of ``p`` values feeds the mean
    of the window ending at position ``j`` of the second block when ``j < i <= j + p``."""
    i = np.arange(2 * p)[:, None]
    j = np.arange(p)[None, :]
    m = np.where((i > j) & (i <= j + p), 1.0 / p, 0.0)
    m.setflags(write=False)
    return m


def recurrence_buffer(rows: int, n: int) -> Array:
    """A zeroed ``(rows, m)`` input buffer for :func:`linear_recurrence` (``m >= n`` is
    ``n`` rounded up to whole blocks); fill ``buf[:, :n]`` with the inputs."""
    b = min(_BLOCK, max(n, 1))
    return np.zeros((rows, -(-n // b) * b))


def linear_recurrence(ub: Array, n: int, c: float, k: float, y0: Array) -> Array:
    """Solve ``y[:, t] = c*y[:, t-1] + k*u[:, t]`` from ``y[:, -1] = y0`` (shape ``(rows,)``).

    ``ub`` comes from :func:`recurrence_buffer` with the inputs ``u`` in ``ub[:, :n]``; it is
    overwritten.  Returns a ``(rows, n)`` view of a new array.  Requires ``k != 0``.
    """
    rows, m_len = ub.shape
    if n == 0:
        return np.empty((rows, 0))
    b = min(_BLOCK, n)
    nb = m_len // b
    u3 = ub.reshape(rows, nb, b)
    m = _power_matrix(float(c), float(k), b)
    carry_in = np.empty((rows, nb))
    carry_in[:, 0] = y0
    if nb > 1:
        ends = u3[:, :-1, :] @ m[:, -1]  # each block's end value from a zero start
        cb = float(c) ** b
        if cb > _TINY:
            buf = recurrence_buffer(rows, nb - 1)
            buf[:, : nb - 1] = ends
            carry_in[:, 1:] = linear_recurrence(buf, nb - 1, cb, 1.0, y0)
        else:
            carry_in[:, 1:] = ends
    # c*y_prev enters the block like an extra input y_prev*c/k at its first step
    u3[:, :, 0] += carry_in * (float(c) / float(k))
    return (ub.reshape(rows * nb, b) @ m).reshape(rows, m_len)[:, :n]


def chunk_width(n: int, minimum: int = 1, extra: int = 0) -> int:
    """Columns of a :class:`Recurrence` chunk for ``n`` steps: ``CHUNK`` (fewer for a short
    series, at least ``minimum``) plus ``extra``, rounded up to whole blocks."""
    w = max(min(CHUNK, n), minimum, 1) + extra
    return -(-w // _STEP) * _STEP


class Recurrence:
    """``y[:, t] = c*y[:, t-1] + k*u[:, t]`` for ``rows`` series, one chunk of columns at a
    time: write up to ``width`` inputs in ``u[:, :m]``, call :meth:`step`, read the values.

    ``carry`` is the value before the next chunk (``y0`` at first); assigning it restarts the
    recurrence.  Requires ``k != 0``.
    """

    __slots__ = ("_cin", "_fold", "_last", "_m", "_t", "_y", "carry", "u", "width")

    def __init__(self, rows: int, width: int, c: float, k: float, y0: Array) -> None:
        if width % _STEP:
            raise ValueError(f"width must be a multiple of {_STEP}, got {width}")
        self.width = width
        nb = width // _STEP
        self.u = np.zeros((rows, width))
        self._y = np.empty((rows, width))
        self._m = _power_matrix(float(c), float(k), _STEP)
        self._last = np.ascontiguousarray(self._m[:, -1])
        with np.errstate(under="ignore"):
            cb = float(c) ** _STEP
        # block carries: carry_in[j] = sum_i cb**(j-i) * e[i], e = (carry, block ends...).
        # No flushing here: a tiny power can still carry a value TA-Lib keeps (a decaying
        # Wilder average far below 1e-290 still makes an RSI of 100).
        self._t = _power_matrix(cb, 1.0, nb, 0.0)
        self._fold = float(c) / float(k)
        self._cin = np.empty((rows, nb))
        self.carry = np.array(y0, dtype=np.float64)

    def step(self, m: int) -> Array:
        """Consume ``u[:, :m]`` (the rest of ``u`` is zeroed) and return the ``(rows, m)``
        values, a view valid until the next call; ``u`` is overwritten."""
        rows, width = self.u.shape
        if m < width:
            self.u[:, m:] = 0.0
        u2 = self.u.reshape(-1, _STEP)
        ends = (u2 @ self._last).reshape(rows, -1)  # each block's end value from a zero start
        e = self._cin
        e[:, 0] = self.carry
        e[:, 1:] = ends[:, :-1]
        cin = e @ self._t
        cin *= self._fold  # c*y_prev enters a block like an extra input y_prev*c/k
        self.u.reshape(rows, -1, _STEP)[:, :, 0] += cin
        np.matmul(u2, self._m, out=self._y.reshape(-1, _STEP))
        y = self._y[:, :m]
        self.carry = y[:, -1].copy()
        return y


def padded(x: Array, lo: int, hi: int) -> Array:
    """Columns ``lo .. hi-1`` of ``x`` as a new array, extended past either end with the
    edge values."""
    rows, t = x.shape
    out = np.empty((rows, hi - lo))
    a, b = max(lo, 0), min(hi, t)
    out[:, a - lo : b - lo] = x[:, a:b]
    out[:, : a - lo] = x[:, :1]
    out[:, b - lo :] = x[:, t - 1 :]
    return out

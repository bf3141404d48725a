"""Vectorized building blocks shared by the batch indicators (numpy only).

Both kernels work on 2-D ``(streams, time)`` float64 arrays and avoid any Python loop over
time by turning short stretches of time into small matrix products, which BLAS runs at
close to memory speed:

* :func:`linear_recurrence` solves ``y[t] = c*y[t-1] + k*u[t]`` (every EMA and Wilder
  average).  Time is cut into blocks of ``_BLOCK`` steps; the value at the end of each block
  is a dot product, the block-to-block carries form the same recurrence with factor
  ``c**_BLOCK`` (solved recursively), each carry is folded into its block's first input, and
  one product with the lower-triangular matrix of powers of ``c`` yields every value.  Only
  powers ``c**j`` with ``j <= _BLOCK`` appear, so nothing grows or cancels (a closed form
  with cumulative products would), and the result stays within a few ulp of TA-Lib's loop.
* :func:`rolling_mean` and :func:`rolling_bands` give rolling sums of ``p`` values (and
  of squared deviations) with blocks of exactly ``p`` steps: a window is a prefix of one
  block plus a suffix of the
  previous one, both matrix products.  Every window sum adds at most ``p`` terms, so there
  is no cumsum-difference cancellation however long the series, and values are centred on
  the previous block's first close so squares stay at the scale of local moves.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = ["linear_recurrence", "recurrence_buffer", "rolling_bands", "rolling_mean"]

Array = NDArray[np.float64]

_BLOCK = 32  # time steps per matrix product in linear_recurrence
_TINY = 1e-290  # powers below this are flushed to 0 (avoids slow subnormal arithmetic)


@lru_cache(maxsize=64)
def _power_matrix(c: float, k: float, b: int) -> Array:
    """``M[i, j] = k * c**(j-i)`` for ``j >= i``, else 0."""
    lag = np.arange(b)[None, :] - np.arange(b)[:, None]
    with np.errstate(under="ignore"):
        m = np.where(lag >= 0, k * c ** np.maximum(lag, 0).astype(np.float64), 0.0)
    m[np.abs(m) < _TINY] = 0.0
    m.setflags(write=False)
    return m


@lru_cache(maxsize=16)
def _prefix_suffix(p: int) -> tuple[Array, Array]:
    """Matrices giving, for each ``j``, the sum of entries ``0..j`` and of ``j+1..p-1``."""
    upper = np.triu(np.ones((p, p)))
    lower = np.tril(np.ones((p, p)), -1)
    upper.setflags(write=False)
    lower.setflags(write=False)
    return upper, lower


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


def _blocks(x: Array, p: int) -> tuple[Array, int]:
    """``x`` as ``(rows, nb, p)`` blocks, padded at the end with the last value if needed."""
    rows, t = x.shape
    nb = -(-t // p)
    if nb * p == t:
        return x.reshape(rows, nb, p), nb
    xp = np.empty((rows, nb * p))
    xp[:, :t] = x
    xp[:, t:] = x[:, -1:]
    return xp.reshape(rows, nb, p), nb


def _unblock(a: Array, t: int) -> Array:
    rows = a.shape[0]
    flat = a.reshape(rows, -1)
    return flat if flat.shape[1] == t else np.ascontiguousarray(flat[:, :t])


def rolling_mean(x: Array, p: int) -> Array:
    """Mean of the last ``p`` values along axis 1, shape ``(rows, T)``; entries before
    ``p - 1`` are meaningless.  Raw values are fine here: each sum has at most ``p`` terms."""
    rows, t = x.shape
    x3, nb = _blocks(x, p)
    upper, lower = _prefix_suffix(p)
    mean = (x3.reshape(-1, p) @ (upper / p)).reshape(rows, nb, p)
    mean[:, 1:, :] += (x3[:, :-1, :].reshape(-1, p) @ (lower / p)).reshape(rows, nb - 1, p)
    return _unblock(mean, t)


def rolling_bands(x: Array, p: int, k: float) -> tuple[Array, Array, Array]:
    """``(mean + k*std, mean, mean - k*std)`` over the last ``p`` values along axis 1
    (population std), each ``(rows, T)``; entries before ``p - 1`` are meaningless.

    Values are centred per block so the squares stay at the scale of local moves.
    """
    rows, t = x.shape
    x3, nb = _blocks(x, p)
    upper_m, lower_m = _prefix_suffix(p)
    upper_m = upper_m / p
    lower_m = lower_m / p
    ref = x3[:, :, 0].copy()  # block references
    step = np.zeros_like(ref)
    step[:, 1:] = ref[:, 1:] - ref[:, :-1]
    # own: block k centred on its first value, for the suffix used by windows ending in k+1;
    # cross: block k centred on block k-1's first value, for the prefix of windows ending in k
    own = x3 - ref[:, :, None]
    cross = own + step[:, :, None]
    mid = (cross.reshape(-1, p) @ upper_m).reshape(rows, nb, p)
    tail = (own[:, :-1, :].reshape(-1, p) @ lower_m).reshape(rows, nb - 1, p)
    mid[:, 1:, :] += tail
    np.multiply(own, own, out=own)
    np.multiply(cross, cross, out=cross)
    up = (cross.reshape(-1, p) @ upper_m).reshape(rows, nb, p)
    np.matmul(own[:, :-1, :].reshape(-1, p), lower_m, out=tail.reshape(-1, p))
    up[:, 1:, :] += tail
    np.multiply(mid, mid, out=own)
    up -= own  # variance = E[d^2] - E[d]^2, at the scale of local moves
    np.maximum(up, 0.0, out=up)
    np.sqrt(up, out=up)
    up *= k
    mid[:, 1:, :] += ref[:, :-1, None]
    mid[:, 0, :] += ref[:, :1]
    low = np.subtract(mid, up, out=cross)
    up += mid
    return _unblock(up, t), _unblock(mid, t), _unblock(low, t)

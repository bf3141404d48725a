"""Incremental indicators for many streams at once (:class:`Bank`).

All state lives in a few ``(n_streams, ...)`` arrays, so one :meth:`Bank.update` call advances
any subset of streams by one closed candle with a fixed number of numpy operations, whatever
the subset's size.  Each EMA-like quantity (Wilder gain/loss averages, EMA20, the MACD fast and
slow EMAs, the signal EMA) follows TA-Lib's life cycle, ``state = alpha*state + beta*input``
with ``(alpha, beta)`` looked up by how many closes the stream has seen:

* before its first input: ``(1, 0)`` (stays 0),
* while its seed window fills: ``(1, 1)`` (a running sum),
* on the seed's last value: ``(1/p, 1/p)`` (the SMA seed),
* afterwards: ``(1-k, k)``.

Window sums (SMA50, Bollinger 20) are running sums over a 50-slot ring buffer of closes.  They
accumulate rounding, so every ``REANCHOR_EVERY`` updates each stream recomputes them from its
ring (streams are staggered by id so the work spreads evenly over calls); the Bollinger sums
are kept relative to a recent close so the sum of squares never holds price**2.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._kernels import linear_recurrence, recurrence_buffer
from .outputs import (
    BOLLINGER_K,
    BOLLINGER_PERIOD,
    EMA_PERIOD,
    MACD_FAST,
    MACD_SIGNAL,
    MACD_SLOW,
    OUTPUT_FIELDS,
    RSI_PERIOD,
    SMA_PERIOD,
)

__all__ = ["OUTPUT_FIELDS", "REANCHOR_EVERY", "Bank"]

Array = NDArray[np.float64]

REANCHOR_EVERY: Final = 64  # updates between recomputations of a stream's window sums

_RING = SMA_PERIOD  # SMA50 window, also holds the Bollinger window
_BB = BOLLINGER_PERIOD
_BB_K = BOLLINGER_K
assert _BB <= _RING
# EMA-like columns: (first input index, period, smoothing k).  Column order matters:
# 0 gain avg, 1 loss avg, 2 EMA20, 3 MACD fast, 4 MACD slow, 5 MACD signal (input: MACD line)
_COLUMNS: Final = (
    (1, RSI_PERIOD, 1.0 / RSI_PERIOD),
    (1, RSI_PERIOD, 1.0 / RSI_PERIOD),
    (0, EMA_PERIOD, 2.0 / (EMA_PERIOD + 1)),
    # TA-Lib seeds the fast EMA at the slow one's seed index (25)
    (MACD_SLOW - MACD_FAST, MACD_FAST, 2.0 / (MACD_FAST + 1)),
    (0, MACD_SLOW, 2.0 / (MACD_SLOW + 1)),
    (MACD_SLOW - 1, MACD_SIGNAL, 2.0 / (MACD_SIGNAL + 1)),
)
_PHASES = max(s + p for s, p, _ in _COLUMNS) + 1
# first index at which each output column has a value (TA-Lib lookbacks)
_MACD_LOOKBACK = MACD_SLOW + MACD_SIGNAL - 2
_LOOKBACK = np.array(
    [
        RSI_PERIOD,
        _MACD_LOOKBACK,
        _MACD_LOOKBACK,
        _BB - 1,
        _BB - 1,
        _BB - 1,
        EMA_PERIOD - 1,
        _RING - 1,
    ]
)

# float state columns
_LAST, _EMA0, _S50, _REF, _S1, _S2 = 0, 1, 7, 8, 9, 10
_NSTATE = 11


def _phase_tables() -> tuple[Array, Array]:
    alpha = np.ones((_PHASES, len(_COLUMNS)))
    beta = np.zeros((_PHASES, len(_COLUMNS)))
    for col, (s, p, k) in enumerate(_COLUMNS):
        for i in range(_PHASES):
            j = i - s
            if 0 <= j < p - 1:
                beta[i, col] = 1.0
            elif j == p - 1:
                alpha[i, col] = beta[i, col] = 1.0 / p
            elif j >= p:
                alpha[i, col], beta[i, col] = 1.0 - k, k
    return alpha, beta


_ALPHA, _BETA = _phase_tables()
_BETA_SIGNED = _BETA * np.array([1.0, -1.0, 1.0, 1.0, 1.0, 1.0])  # loss input is min(move, 0)
_AB = np.ascontiguousarray(np.concatenate([_ALPHA, _BETA_SIGNED], axis=1).T)  # (12, phases)
_SCALE = np.array([1.0 / _RING, 1.0, 1.0 / _BB, 1.0 / _BB])[:, None]
_BAND_SIGNS = np.array([_BB_K, 0.0, -_BB_K])[:, None]
_LOOKBACK_COL = _LOOKBACK[:, None]
_MAX_LOOKBACK = int(max(_LOOKBACK.max(), _PHASES - 1))
_AB_STEADY = np.ascontiguousarray(_AB[:, -1:])


def _ema_state(u: Array, start: int, p: int, k: float) -> Array:
    """State of one EMA-like column after consuming ``u[:, :n]`` (see the module docstring)."""
    rows, n = u.shape
    if n <= start:
        return np.zeros(rows)
    if n - start < p:
        return np.asarray(u[:, start:].sum(axis=1), dtype=np.float64)
    seed = u[:, start : start + p].sum(axis=1) / p
    m = n - start - p
    if m == 0:
        return np.asarray(seed, dtype=np.float64)
    buf = recurrence_buffer(rows, m)
    buf[:, :m] = u[:, start + p :]
    return np.asarray(linear_recurrence(buf, m, 1.0 - k, k, seed)[:, -1], dtype=np.float64)


def _ema_series(u: Array, start: int, p: int, k: float) -> Array:
    """Full EMA series of ``u`` from its seed index ``start + p - 1`` on (NaN before)."""
    rows, n = u.shape
    out = np.full((rows, n), np.nan)
    seed_at = start + p - 1
    if n > seed_at:
        out[:, seed_at] = u[:, start : seed_at + 1].sum(axis=1) / p
        m = n - seed_at - 1
        buf = recurrence_buffer(rows, m)
        buf[:, :m] = u[:, seed_at + 1 :]
        out[:, seed_at + 1 :] = linear_recurrence(buf, m, 1.0 - k, k, out[:, seed_at])
    return out


class Bank:
    """RSI14, MACD 12/26/9, Bollinger 20/2, EMA20 and SMA50 kept up to date for
    ``n_streams`` streams (ids ``0 .. n_streams-1``), one closed candle at a time."""

    def __init__(self, n_streams: int) -> None:
        if n_streams < 1:
            raise ValueError("n_streams must be >= 1")
        self.n_streams = int(n_streams)
        self._count = np.zeros(self.n_streams, dtype=np.int64)
        # one row per state field, one column per stream: per-field ops stay contiguous
        self._state = np.zeros((_NSTATE, self.n_streams))
        self._ring = np.zeros((self.n_streams, _RING))
        self._ring_flat = self._ring.reshape(-1)  # a view, for flat take/put

    # -- bookkeeping ---------------------------------------------------------------------
    def count(self, stream_id: int) -> int:
        """Closes seen by ``stream_id`` since creation or its last reset."""
        return int(self._count[stream_id])

    def reset(self, stream_id: int) -> None:
        """Forget everything about ``stream_id``."""
        self._count[stream_id] = 0
        self._state[:, stream_id] = 0.0
        self._ring[stream_id] = 0.0

    # -- warm-up -------------------------------------------------------------------------
    def warm(self, stream_id: int, closes: ArrayLike) -> None:
        """Reset ``stream_id`` and load its history (oldest first; may be short or empty)."""
        hist = np.asarray(closes, dtype=np.float64)
        if hist.ndim != 1:
            raise ValueError("closes must be 1-D")
        self.warm_many(np.array([stream_id]), hist[None, :])

    def warm_many(self, stream_ids: ArrayLike, closes: ArrayLike) -> None:
        """Reset the listed streams and load equal-length histories ``closes[row]``
        (shape ``(len(stream_ids), n)``, oldest first), vectorized over the streams."""
        ids = np.asarray(stream_ids, dtype=np.intp)
        x = np.ascontiguousarray(closes, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != ids.shape[0]:
            raise ValueError("closes must have shape (len(stream_ids), n)")
        if np.unique(ids).size != ids.size:
            raise ValueError("stream_ids must be unique")
        rows, n = x.shape
        state = np.zeros((rows, _NSTATE))
        ring = np.zeros((rows, _RING))
        if n:
            state[:, _LAST] = x[:, -1]
            moves = np.zeros((rows, n))
            moves[:, 1:] = np.diff(x, axis=1)
            gains, losses = np.maximum(moves, 0.0), np.maximum(-moves, 0.0)
            for col, u in enumerate((gains, losses, x, x, x)):
                s, p, k = _COLUMNS[col]
                state[:, _EMA0 + col] = _ema_state(u, s, p, k)
            line = np.zeros((rows, n))
            if n >= MACD_SLOW:
                s_f, p_f, k_f = _COLUMNS[3]
                s_s, p_s, k_s = _COLUMNS[4]
                fast, slow = _ema_series(x, s_f, p_f, k_f), _ema_series(x, s_s, p_s, k_s)
                line[:, MACD_SLOW - 1 :] = (fast - slow)[:, MACD_SLOW - 1 :]
            s, p, k = _COLUMNS[5]
            state[:, _EMA0 + 5] = _ema_state(line, s, p, k)
            tail = np.arange(max(0, n - _RING), n)
            ring[:, tail % _RING] = x[:, tail]
        self._count[ids] = n
        self._state[:, ids] = state.T
        self._ring[ids] = ring
        self._reanchor(ids)

    def _reanchor(self, ids: NDArray[np.intp]) -> None:
        """Recompute the window sums of ``ids`` from their rings (centred on the last close)."""
        if ids.size == 0:
            return
        ring = self._ring[ids]
        count = self._count[ids]
        ref = self._state[_LAST, ids]
        cols = (count[:, None] - np.arange(1, _BB + 1)) % _RING
        d = np.take_along_axis(ring, cols, axis=1) - ref[:, None]
        self._state[_S50, ids] = ring.sum(axis=1)
        self._state[_REF, ids] = ref
        self._state[_S1, ids] = d.sum(axis=1)
        self._state[_S2, ids] = (d * d).sum(axis=1)

    # -- the hot path --------------------------------------------------------------------
    def update(self, stream_ids: ArrayLike, closes: ArrayLike) -> Array:
        """Advance each listed stream (unique ids) by one closed candle.

        Returns ``(len(stream_ids), 8)`` float64 in :data:`OUTPUT_FIELDS` order, NaN where a
        lookback is not filled yet.  A fixed number of numpy calls, whatever the subset size.
        """
        ids = np.asarray(stream_ids, dtype=np.intp)
        x = np.asarray(closes, dtype=np.float64)
        i = self._count.take(ids)
        st = self._state.take(ids, axis=1)  # (fields, k)
        # steady state (every listed stream past all lookbacks): constant coefficients, no NaN
        steady = ids.size > 0 and int(i.min()) > _MAX_LOOKBACK
        # (12, k) or (12, 1): alphas then betas
        ab = _AB_STEADY if steady else _AB.take(np.minimum(i, _PHASES - 1), axis=1)

        # EMA-like rows: state = alpha*state + beta*input (loss enters as -min(move, 0))
        inputs = np.empty((5, ids.size))
        np.subtract(x, st[_LAST], out=inputs[0])
        np.minimum(inputs[0], 0.0, out=inputs[1])
        np.maximum(inputs[0], 0.0, out=inputs[0])
        inputs[2:] = x
        ema = st[_EMA0 : _EMA0 + 6]
        ema *= ab[:6]
        inputs *= ab[6:11]
        ema[:5] += inputs
        line = ema[3] - ema[4]
        ema[5] += line * ab[11]

        # window sums over the ring (old values are 0 until the ring has wrapped)
        ring = self._ring_flat
        at = ids * _RING
        slot = at + i % _RING
        old20 = ring.take(at + (i + (_RING - _BB)) % _RING)
        st[_S50] += x - ring.take(slot)
        ring[slot] = x
        dx = x - old20
        st[_S1] += dx
        st[_S2] += dx * (x + old20 - 2.0 * st[_REF])  # (x-ref)^2 - (old-ref)^2
        st[_LAST] = x
        self._state[:, ids] = st
        i += 1
        self._count[ids] = i
        due_mask = (i + ids) % REANCHOR_EVERY == 0
        if not steady:
            due_mask |= i == _BB  # window just filled: compute its sums afresh
        due = ids[due_mask]
        if due.size:
            self._reanchor(due)
            st = self._state.take(ids, axis=1)

        out = np.empty((8, ids.size))
        total = ema[0] + ema[1]
        total += total == 0.0  # both averages 0 (no move): 0/1 gives TA-Lib's 0
        np.divide(ema[0], total, out=out[0])
        out[0] *= 100.0
        out[1] = line
        out[2] = ema[5]
        out[6] = ema[2]
        sums = st[_S50 : _S2 + 1] * _SCALE  # S50/50, ref, S1/20, S2/20
        width = sums[3] - sums[2] * sums[2]
        np.maximum(width, 0.0, out=width)
        np.sqrt(width, out=width)
        np.multiply(width, _BAND_SIGNS, out=out[3:6])
        out[3:6] += sums[1] + sums[2]
        out[7] = sums[0]
        if not steady:
            out[i <= _LOOKBACK_COL] = np.nan
        return out.T

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

__all__ = ["OUTPUT_FIELDS", "REANCHOR_EVERY", "Bank"]

Array = NDArray[np.float64]

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

REANCHOR_EVERY: Final = 64  # updates between recomputations of a stream's window sums

_RING = 50  # SMA50 window, also holds the Bollinger window
_BB = 20
_BB_K = 2.0
# EMA-like columns: (first input index, period, smoothing k).  Column order matters:
# 0 gain avg, 1 loss avg, 2 EMA20, 3 MACD fast, 4 MACD slow, 5 MACD signal (input: MACD line)
_COLUMNS: Final = (
    (1, 14, 1.0 / 14),
    (1, 14, 1.0 / 14),
    (0, 20, 2.0 / 21),
    (14, 12, 2.0 / 13),  # TA-Lib seeds the fast EMA at the slow one's seed index 25
    (0, 26, 2.0 / 27),
    (25, 9, 2.0 / 10),
)
_PHASES = max(s + p for s, p, _ in _COLUMNS) + 1
# first index at which each output column has a value (TA-Lib lookbacks)
_LOOKBACK = np.array([14, 33, 33, _BB - 1, _BB - 1, _BB - 1, 19, _RING - 1])

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
        self._state = np.zeros((self.n_streams, _NSTATE))
        self._ring = np.zeros((self.n_streams, _RING))
        self._stagger = np.arange(self.n_streams, dtype=np.int64) % REANCHOR_EVERY

    # -- bookkeeping ---------------------------------------------------------------------
    def count(self, stream_id: int) -> int:
        """Closes seen by ``stream_id`` since creation or its last reset."""
        return int(self._count[stream_id])

    def reset(self, stream_id: int) -> None:
        """Forget everything about ``stream_id``."""
        self._count[stream_id] = 0
        self._state[stream_id] = 0.0
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
            if n >= 26:
                s_f, p_f, k_f = _COLUMNS[3]
                s_s, p_s, k_s = _COLUMNS[4]
                line[:, 25:] = (_ema_series(x, s_f, p_f, k_f) - _ema_series(x, s_s, p_s, k_s))[
                    :, 25:
                ]
            s, p, k = _COLUMNS[5]
            state[:, _EMA0 + 5] = _ema_state(line, s, p, k)
            tail = np.arange(max(0, n - _RING), n)
            ring[:, tail % _RING] = x[:, tail]
        self._count[ids] = n
        self._state[ids] = state
        self._ring[ids] = ring
        self._reanchor(ids)

    def _reanchor(self, ids: NDArray[np.intp]) -> None:
        """Recompute the window sums of ``ids`` from their rings (centred on the last close)."""
        if ids.size == 0:
            return
        ring = self._ring[ids]
        count = self._count[ids]
        ref = self._state[ids, _LAST]
        cols = (count[:, None] - np.arange(1, _BB + 1)) % _RING
        d = np.take_along_axis(ring, cols, axis=1) - ref[:, None]
        self._state[ids, _S50] = ring.sum(axis=1)
        self._state[ids, _REF] = ref
        self._state[ids, _S1] = d.sum(axis=1)
        self._state[ids, _S2] = (d * d).sum(axis=1)

    # -- the hot path --------------------------------------------------------------------
    def update(self, stream_ids: ArrayLike, closes: ArrayLike) -> Array:
        """Advance each listed stream (unique ids) by one closed candle.

        Returns ``(len(stream_ids), 8)`` float64 in :data:`OUTPUT_FIELDS` order, NaN where a
        lookback is not filled yet.
        """
        ids = np.asarray(stream_ids, dtype=np.intp)
        x = np.asarray(closes, dtype=np.float64)
        i = self._count[ids]
        st = self._state[ids]
        phase = np.minimum(i, _PHASES - 1)
        alpha, beta = _ALPHA[phase], _BETA[phase]

        move = x - st[:, _LAST]
        inputs = np.empty((ids.size, 5))
        np.maximum(move, 0.0, out=inputs[:, 0])
        np.maximum(-move, 0.0, out=inputs[:, 1])
        inputs[:, 2:] = x[:, None]
        ema = st[:, _EMA0 : _EMA0 + 6]
        ema *= alpha
        ema[:, :5] += inputs * beta[:, :5]
        line = ema[:, 3] - ema[:, 4]
        ema[:, 5] += line * beta[:, 5]

        slot = i % _RING
        old50 = self._ring[ids, slot]
        old20 = self._ring[ids, (i - _BB) % _RING]  # 0 while fewer than 20 closes
        self._ring[ids, slot] = x
        ref = st[:, _REF]
        st[:, _S50] += x - old50
        st[:, _S1] += x - old20
        st[:, _S2] += np.square(x - ref) - np.square(old20 - ref)
        st[:, _LAST] = x
        self._state[ids] = st
        i += 1
        self._count[ids] = i
        due = ids[((i + self._stagger[ids]) % REANCHOR_EVERY == 0) | (i == _BB)]
        if due.size:
            self._reanchor(due)
            st = self._state[ids]

        out = np.empty((ids.size, 8))
        gain, loss = ema[:, 0], ema[:, 1]
        total = gain + loss
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(100.0 * gain, total, out=out[:, 0])
        out[total == 0.0, 0] = 0.0
        out[:, 1] = line
        out[:, 2] = ema[:, 5]
        mean_d = st[:, _S1] / _BB
        var = st[:, _S2] / _BB - mean_d * mean_d
        width = _BB_K * np.sqrt(np.maximum(var, 0.0))
        out[:, 4] = st[:, _REF] + mean_d
        out[:, 3] = out[:, 4] + width
        out[:, 5] = out[:, 4] - width
        out[:, 6] = ema[:, 2]
        out[:, 7] = st[:, _S50] / _RING
        out[i[:, None] <= _LOOKBACK] = np.nan
        return out

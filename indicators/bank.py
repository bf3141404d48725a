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

Window sums (SMA50, Bollinger 20) are running sums over a ring buffer of each stream's last
closes (64 slots, a power of two, so a slot is ``count & 63``: no integer division on the hot
path).  The ring is time-major, one row per slot: streams in lockstep (the same count, as
streams warmed alike and updated together are) read and write whole rows.  The sums accumulate
rounding, so every ``REANCHOR_EVERY`` updates each stream recomputes them from its ring
(streams are staggered by id so the work spreads evenly over calls); the Bollinger sums are
kept relative to a recent close so the sum of squares never holds price**2.

:meth:`Bank.update` works in place on views of the state when the listed ids are evenly spaced
and ascending, ``lo, lo+step, ..., hi-1`` (every stream of the bank, or every symbol's stream of
one timeframe, as the daemon numbers streams symbol-major); any other subset is gathered,
updated and scattered back.
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

_SMA = SMA_PERIOD
# ring slots per stream: >= the SMA window, a power of two (a slot is count & _MASK), and one
# turn of the ring is REANCHOR_EVERY updates (a stream is due when its slot is its due phase)
_RING = REANCHOR_EVERY
_MASK = _RING - 1
_BB = BOLLINGER_PERIOD
_BB_K = BOLLINGER_K
assert _SMA <= _RING and _BB <= _SMA
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
        _SMA - 1,
    ]
)

# float state rows: _S50 and _S1 side by side (one op adds both windows' changes); _REF2 is
# twice the reference close (the sum of squares needs 2*ref, and 0.5*_REF2 is exact)
_LAST, _EMA0, _S50, _S1, _REF2, _S2 = 0, 1, 7, 8, 9, 10
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
_SCALE = np.array([1.0 / _SMA, 1.0 / _BB, 0.5, 1.0 / _BB])[:, None]
_BAND_SIGNS = np.array([_BB_K, 0.0, -_BB_K])[:, None]
_LOOKBACK_COL = _LOOKBACK[:, None]
_MAX_LOOKBACK = int(max(_LOOKBACK.max(), _PHASES - 1))
_AB_STEADY = np.ascontiguousarray(_AB[:, -1:])
_AGES = np.arange(1, _SMA + 1)  # ages of the closes in the SMA window, newest first
_AB_ROWS = np.ascontiguousarray(_AB.T)  # (phases, 12): one row per phase, for a fast take
# ring slots relative to this close's: its own, the ones leaving the SMA and Bollinger windows
_OFFSETS = np.array([0, -_SMA, -_BB])[:, None]


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
        self._ring = np.zeros((_RING, self.n_streams))  # time-major: one row per slot
        self._ring_flat = self._ring.reshape(-1)  # a view, for flat take/put
        self._ids = np.arange(self.n_streams, dtype=np.intp)
        # the slot a stream writes when its sums are due: (count + id) % REANCHOR_EVERY == 0
        # after the update (ids stagger the streams so the work spreads evenly over calls)
        self._due_slot = (-1 - self._ids) & _MASK

    # -- bookkeeping ---------------------------------------------------------------------
    def count(self, stream_id: int) -> int:
        """Closes seen by ``stream_id`` since creation or its last reset."""
        return int(self._count[stream_id])

    def reset(self, stream_id: int) -> None:
        """Forget everything about ``stream_id``."""
        self._count[stream_id] = 0
        self._state[:, stream_id] = 0.0
        self._ring[:, stream_id] = 0.0

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
            tail = np.arange(max(0, n - _SMA), n)
            ring[:, tail & _MASK] = x[:, tail]
        self._count[ids] = n
        self._state[:, ids] = state.T
        self._ring[:, ids] = ring.T
        self._state[_S50:, ids] = self._window_sums(
            self._count[ids], ids, x[:, -1] if n else np.zeros(rows)
        )

    def _window_sums(self, count: NDArray[np.int64], ids: NDArray[np.intp], ref: Array) -> Array:
        """Rows ``_S50 .. _S2`` recomputed from the rings of ``ids`` (closes seen ``count``)
        around the reference closes ``ref``, for re-anchoring: shape ``(4, m)``.
        Closes before a stream's first one count as 0, as the running sums have them."""
        age = count[:, None] - _AGES  # (m, 50), newest first
        at = age & _MASK
        at *= self.n_streams
        at += ids[:, None]
        last = self._ring_flat.take(at)
        if count.size and int(count.min()) < _SMA:
            last[age < 0] = 0.0
        d = last[:, :_BB] - ref[:, None]
        sums = np.empty((4, count.size))
        last.sum(axis=1, out=sums[0])
        d.sum(axis=1, out=sums[1])
        np.multiply(ref, 2.0, out=sums[2])
        d *= d
        d.sum(axis=1, out=sums[3])
        return sums

    def _run(self, ids: NDArray[np.intp]) -> slice | None:
        """``ids`` as a slice of the state if they are ``lo, lo+step, ..., hi-1`` (the whole
        bank, a run of it, or one timeframe of every symbol: ids are symbol-major), else None."""
        k = ids.size
        if ids.ndim != 1 or k == 0:
            return None
        lo = int(ids[0])
        step = int(ids[1]) - lo if k > 1 else 1
        hi = lo + step * (k - 1) + 1
        if lo < 0 or step < 1 or hi > self.n_streams or int(ids[-1]) != hi - 1:
            return None
        if k > 2 and not bool((ids == self._ids[lo:hi:step]).all()):
            return None
        return slice(lo, hi, step)

    # -- the hot path --------------------------------------------------------------------
    def update(self, stream_ids: ArrayLike, closes: ArrayLike) -> Array:
        """Advance each listed stream (unique ids) by one closed candle.

        Returns ``(len(stream_ids), 8)`` float64 in :data:`OUTPUT_FIELDS` order, NaN where a
        lookback is not filled yet.  A fixed number of numpy calls, whatever the subset size.
        """
        ids = np.asarray(stream_ids, dtype=np.intp)
        x = np.asarray(closes, dtype=np.float64)
        k = ids.size
        run = self._run(ids)
        if run is not None:  # views: every in-place op below updates the bank itself
            st = self._state[:, run]  # (fields, k)
            i = self._count[run]
            due_slot = self._due_slot[run]
        else:
            st = self._state.take(ids, axis=1)
            i = self._count.take(ids)
            due_slot = self._due_slot.take(ids)
        # steady state (every listed stream past all lookbacks): constant coefficients, no NaN
        low = int(i.min()) if k else 0
        steady = k > 0 and low > _MAX_LOOKBACK
        # (12, k) or (12, 1): alphas then betas
        ab = _AB_STEADY if steady else _AB_ROWS.take(np.minimum(i, _PHASES - 1), axis=0).T
        out = np.empty((8, k))

        # the ring: this close's slot, and the closes leaving the 50 and 20 windows (0 until
        # the stream has that many closes: their slots are still unwritten)
        # old: (2, k), the closes leaving the SMA window and Bollinger's
        if run is not None and int(i.max()) == low:  # lockstep: one slot, rows of the ring
            slot = low & _MASK
            due = due_slot == slot
            old = self._ring[[(slot - _SMA) & _MASK, (slot - _BB) & _MASK], run]
            self._ring[slot, run] = x
        else:
            slots = np.add(i, _OFFSETS)
            slots &= _MASK
            due = slots[0] == due_slot
            slots *= self.n_streams
            slots += ids
            old = self._ring_flat.take(slots[1:])
            self._ring_flat[slots[0]] = x
        if not steady:
            due |= i == _BB - 1  # window filled by this close: compute its sums afresh

        # EMA-like rows: state = alpha*state + beta*input (loss enters as -min(move, 0))
        inputs = np.empty((5, k))
        np.subtract(x, st[_LAST], out=inputs[0])
        np.minimum(inputs[0], 0.0, out=inputs[1])
        np.maximum(inputs[0], 0.0, out=inputs[0])
        inputs[:2] *= ab[6:8]
        np.multiply(x, ab[8:11], out=inputs[2:])
        ema = st[_EMA0 : _EMA0 + 6]
        ema *= ab[:6]
        ema[:5] += inputs
        line = np.subtract(ema[3], ema[4], out=out[1])
        ema[5] += line * ab[11]

        # window sums: (x-ref)^2 - (old-ref)^2 = (x-old) * (x+old-2ref)
        sq = x + old[1]
        sq -= st[_REF2]
        np.subtract(x, old, out=old)  # rows: the SMA sum's change, Bollinger's (dx)
        st[_S50 : _S1 + 1] += old
        sq *= old[1]
        st[_S2] += sq
        st[_LAST] = x
        i += 1
        at = np.flatnonzero(due)
        if at.size:
            st[_S50:, at] = self._window_sums(i[at], ids[at], x[at])
        if run is None:
            self._state[:, ids] = st
            self._count[ids] = i

        total = ema[0] + ema[1]
        total += total == 0.0  # both averages 0 (no move): 0/1 gives TA-Lib's 0
        np.divide(ema[0], total, out=out[0])
        out[0] *= 100.0
        out[2] = ema[5]
        out[6] = ema[2]
        sums = st[_S50:] * _SCALE  # S50/50, S1/20 (the mean's offset from ref), ref, S2/20
        width = sums[3] - sums[1] * sums[1]
        np.maximum(width, 0.0, out=width)
        np.sqrt(width, out=width)
        np.multiply(width, _BAND_SIGNS, out=out[3:6])
        out[3:6] += sums[2] + sums[1]
        out[7] = sums[0]
        if not steady:
            out[i <= _LOOKBACK_COL] = np.nan
        return out.T

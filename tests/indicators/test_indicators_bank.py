"""Bank behaviour: output layout, reset/count, short histories, and long-run drift."""

from __future__ import annotations

import time

import numpy as np
import pytest

import indicators as ind

from .test_indicators_properties import _bank_reference, assert_bank_matches


def test_output_fields() -> None:
    assert ind.OUTPUT_FIELDS == (
        "rsi_14",
        "macd",
        "macd_signal",
        "bollinger_upper",
        "bollinger_middle",
        "bollinger_lower",
        "ema_20",
        "sma_50",
    )


def test_short_history_fills_lookbacks_like_talib() -> None:
    rng = np.random.default_rng(7)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 80)))
    bank = ind.Bank(3)
    bank.warm(1, x[:5])  # shorter than every lookback
    rows = np.array([bank.update([1], [c])[0] for c in x[5:]])
    assert_bank_matches(rows, _bank_reference(x)[5:], x[5:])
    first = [5 + int(np.argmax(~np.isnan(rows[:, j]))) for j in range(8)]
    assert first == [14, 33, 33, 19, 19, 19, 19, 49]


def test_reset_and_count() -> None:
    x = np.linspace(100.0, 120.0, 60)
    bank = ind.Bank(2)
    bank.warm(0, x)
    assert bank.count(0) == 60 and bank.count(1) == 0
    bank.update([0, 1], [121.0, 5.0])
    assert bank.count(0) == 61 and bank.count(1) == 1
    bank.reset(0)
    assert bank.count(0) == 0
    out = bank.update([0], [7.0])
    assert np.all(np.isnan(out))  # a fresh stream has no value anywhere


def test_streams_are_independent() -> None:
    """Two streams fed at different paces each match batch over what they received."""
    rng = np.random.default_rng(11)
    x = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, (2, 160)), axis=1))
    bank = ind.Bank(2)
    bank.warm_many([0, 1], x[:, :40])
    got: list[list[np.ndarray]] = [[], []]
    fed = [40, 40]
    for t in range(120):  # stream 1 gets a candle every call; stream 0 every other call
        ids = [1, 0] if t % 2 else [1]
        out = bank.update(ids, [x[i, fed[i]] for i in ids])
        for row, i in enumerate(ids):
            got[i].append(out[row])
            fed[i] += 1
    for i in (0, 1):
        ref = _bank_reference(x[i, : fed[i]])[40:]
        assert_bank_matches(np.array(got[i]), ref, x[i, 40 : fed[i]])


@pytest.mark.slow  # 1M Python-level update() calls: 30-95 s alone, past 120 s on a busy machine
@pytest.mark.timeout(600)  # a hang detector sized to the work, not to how busy the machine is
def test_drift_one_stream_million_updates() -> None:
    """1,000,000 updates of one stream through Bank.update still match batch (running
    window sums are re-anchored from the ring every REANCHOR_EVERY updates)."""
    n = 1_000_000
    rng = np.random.default_rng(2024)
    x = 3e4 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    x = np.round(x, 2)
    ref = _bank_reference(x)  # batch over the whole series
    assert ref.shape == (n, 8)
    bank = ind.Bank(1)
    ids = np.zeros(1, dtype=np.intp)
    check_at = set(range(n - 200, n)) | set(range(0, n, 9973))
    got, where = [], []
    t0 = time.perf_counter()
    for t in range(n):
        out = bank.update(ids, x[t : t + 1])
        if t in check_at:
            got.append(out[0])
            where.append(t)
    elapsed = time.perf_counter() - t0
    idx = np.array(where)
    assert_bank_matches(np.array(got), ref[idx], x[idx])
    assert bank.count(0) == n
    print(f"1M single-stream updates in {elapsed:.1f} s")


@pytest.mark.parametrize("k", [1, 7, 2400])
def test_update_shapes(k: int) -> None:
    bank = ind.Bank(2400)
    out = bank.update(np.arange(k), np.full(k, 10.0))
    assert out.shape == (k, 8) and out.dtype == np.float64


@pytest.mark.parametrize("alike", [True, False])
def test_runs_of_ids_update_in_place_like_any_subset(alike: bool) -> None:
    """Evenly spaced ascending ids (lo, lo+step, ..., hi-1) take the in-place path, in
    lockstep (streams warmed alike) or not, any other order the gather/scatter one: from a
    fresh start through every lookback and several re-anchors, both give bit-identical
    outputs and leave identical counts."""
    rng = np.random.default_rng(5)
    n, calls = 300, 3 * ind.REANCHOR_EVERY + 40
    x = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, calls + 12)), axis=1)), 2)
    warm = np.full(n, 7) if alike else 7 + np.arange(n) % 5
    runs, shuffled = ind.Bank(n), ind.Bank(n)
    for i in range(n):
        runs.warm(i, x[i, : warm[i]])
        shuffled.warm(i, x[i, : warm[i]])
    pos = warm.copy()
    for t in range(calls):
        # the whole bank, a run starting inside it, or every 2nd / 3rd stream; then the rest
        ids = np.arange(t % 2, n, 1 + t % 3)
        rest = np.setdiff1d(np.arange(n), ids)
        for part in (ids, rest):
            if part.size == 0:
                continue
            perm = rng.permutation(part)
            a = runs.update(part, x[part, pos[part]])
            b = shuffled.update(perm, x[perm, pos[perm]])
            np.testing.assert_array_equal(a, b[np.argsort(perm)])
            pos[part] += 1
    assert all(runs.count(i) == shuffled.count(i) == pos[i] for i in range(n))

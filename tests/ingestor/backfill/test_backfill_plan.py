"""missing_ranges / grid_bounds / pages: pure functions, checked against brute force."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ingestor.backfill import grid_bounds, missing_ranges, pages, range_count

IV = 60_000


def brute(have: set[int], start: int, end: int, iv: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for t in range(start, end + 1, iv):
        if t in have:
            continue
        if out and out[-1][1] == t - iv:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


@given(
    n=st.integers(0, 300),
    present=st.sets(st.integers(-5, 310)),
    off_grid=st.lists(st.integers(0, 300 * IV)),
)
def test_missing_ranges_matches_brute_force(n: int, present: set[int], off_grid: list[int]) -> None:
    start = 1_700_000_040_000 // IV * IV
    end = start + n * IV
    have = [start + i * IV for i in present] + [start + x for x in off_grid if x % IV]
    got = missing_ranges(np.array(have * 2, dtype=np.int64), start, end, IV)  # duplicates too
    want = brute(set(have), start, end, IV)
    assert got == want
    assert range_count(got, IV) == sum(1 for t in range(start, end + 1, IV) if t not in have)


def test_missing_ranges_edges() -> None:
    assert missing_ranges([], 0, 0, IV) == [(0, 0)]
    assert missing_ranges([], IV, 0, IV) == []
    assert missing_ranges([0, IV, 2 * IV], 0, 2 * IV, IV) == []
    assert missing_ranges([IV], 0, 2 * IV, IV) == [(0, 0), (2 * IV, 2 * IV)]


def test_grid_bounds_clamps_to_closed_klines() -> None:
    now = 10 * IV + 30_000  # the kline opening at 10*IV is still open
    assert grid_bounds(0, None, now, IV) == (0, 9 * IV)
    assert grid_bounds(1, None, now, IV) == (IV, 9 * IV)  # since rounds up to the grid
    assert grid_bounds(0, 5 * IV, now, IV) == (0, 4 * IV)  # until is exclusive
    assert grid_bounds(0, 5 * IV + 1, now, IV) == (0, 5 * IV)
    assert grid_bounds(0, 100 * IV, now, IV) == (0, 9 * IV)  # future until: clamped
    assert grid_bounds(10 * IV, None, now, IV) is None


def test_pages_cut_ranges_at_the_limit() -> None:
    assert pages([(0, 2499 * IV)], IV, 1000) == [
        (0, 999 * IV), (1000 * IV, 1999 * IV), (2000 * IV, 2499 * IV)
    ]  # fmt: skip
    assert pages([(0, 0), (5 * IV, 6 * IV)], IV, 1000) == [(0, 0), (5 * IV, 6 * IV)]

"""What is missing: the closed-kline grid of a time range, minus what the database holds.

Pure functions over epoch-millisecond open times (no I/O), shared by ``ingestor backfill``,
``ingestor gaps`` and the live daemon's restart fill. Binance aligns klines to the epoch, so a
stream's klines open at multiples of its interval; a range is a pair of *inclusive* open times.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Range", "grid_bounds", "missing_ranges", "pages", "range_count"]

#: Inclusive open times ``(first, last)`` of consecutive klines of one stream.
Range = tuple[int, int]


def grid_bounds(since_ms: int, until_ms: int | None, now_ms: int, interval_ms: int) -> Range | None:
    """Open times of the first and last *closed* kline opening in ``[since_ms, until_ms)``.

    ``until_ms`` None or in the future is clamped to the last closed kline at ``now_ms`` (the
    still-open one is never included); None when the range holds no closed kline.
    """
    iv = interval_ms
    first = -(-since_ms // iv) * iv
    last = (now_ms // iv) * iv - iv  # the kline containing now is still open
    if until_ms is not None:
        last = min(last, ((until_ms - 1) // iv) * iv)
    return (first, last) if first <= last else None


def missing_ranges(
    existing_open_times: npt.ArrayLike, start: int, end: int, interval: int
) -> list[Range]:
    """Ranges of open times on the grid ``start, start+interval, ... <= end`` not in
    ``existing_open_times`` (any order; duplicates and off-range or off-grid times ignored)."""
    if end < start:
        return []
    have = np.asarray(existing_open_times, dtype=np.int64).ravel()
    have = have[(have >= start) & (have <= end) & ((have - start) % interval == 0)]
    idx = np.unique((have - start) // interval)  # grid indices present, sorted
    n = (end - start) // interval + 1
    # boundaries of present runs -> the holes between them
    bounds = np.concatenate(([-1], idx, [n]))
    gap = np.flatnonzero(np.diff(bounds) > 1)
    lo = bounds[gap] + 1
    hi = bounds[gap + 1] - 1
    return [
        (start + int(a) * interval, start + int(b) * interval) for a, b in zip(lo, hi, strict=True)
    ]


def range_count(ranges: Sequence[Range], interval: int) -> int:
    """Klines in ``ranges``."""
    return sum((b - a) // interval + 1 for a, b in ranges)


def pages(ranges: Sequence[Range], interval: int, limit: int) -> list[Range]:
    """``ranges`` cut into request pages of at most ``limit`` klines, in time order."""
    out: list[Range] = []
    step = limit * interval
    for a, b in ranges:
        out.extend((p, min(b, p + step - interval)) for p in range(a, b + 1, step))
    return out

"""WeightPacer admits no request past its budget within a window (the indicators the backfill
computes are ``indicators.compute``: tests/indicators/test_indicators_outputs.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from ingestor.pacing import WeightPacer


async def test_pacer_never_exceeds_budget_and_waits_for_the_window() -> None:
    window = 0.3
    pacer = WeightPacer(10, window_s=window)
    sent: list[tuple[float, int]] = []  # (response time, weight)
    peak = 0

    async def request() -> None:
        nonlocal peak
        await pacer.acquire(2)
        peak = max(peak, pacer.used())
        await asyncio.sleep(0.01)
        sent.append((time.monotonic(), 2))
        await pacer.release(2, None)

    t0 = time.monotonic()
    await asyncio.gather(*(request() for _ in range(15)))
    elapsed = time.monotonic() - t0
    assert peak <= 10
    assert pacer.requests == 15 and pacer.weight_sent == 30
    assert elapsed >= 2 * window  # 30 weight at 10 per window: at least two full waits
    assert pacer.waited_s > 0


async def test_pacer_counts_others_weight_from_the_header() -> None:
    reads: list[float] = []

    def clock() -> float:  # the real clock, each reading kept
        reads.append(time.monotonic())
        return reads[-1]

    pacer = WeightPacer(10, window_s=0.2, clock=clock)
    await pacer.acquire(2)
    mark = len(reads)
    await pacer.release(2, 9)  # someone else used 7 on this IP
    released = reads[mark]  # the pacer's own time of the response: its window starts there
    assert pacer.used() == 9
    await pacer.acquire(2)  # 9 + 2 > 10: must wait for the window
    assert time.monotonic() >= released + 0.2
    assert pacer.max_header == 9


def test_pacer_rejects_a_budget_below_one_request() -> None:
    with pytest.raises(ValueError):
        WeightPacer(1)

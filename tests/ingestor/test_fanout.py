"""fan_out: every item once, never more than the limit at once, the first failure raised."""

from __future__ import annotations

import asyncio

import pytest

from ingestor.fanout import fan_out


async def test_every_item_once_with_the_limit_in_flight() -> None:
    done: list[int] = []
    in_flight = peak = 0
    release = asyncio.Event()

    async def work(item: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 3:
            release.set()
        await release.wait()  # the first ones hold their slots until three are in flight
        await asyncio.sleep(0)
        in_flight -= 1
        done.append(item)

    await fan_out(range(10), work, 3)
    assert sorted(done) == list(range(10))
    assert peak == 3


async def test_more_slots_than_items_and_one_slot() -> None:
    order: list[int] = []

    async def work(item: int) -> None:
        await asyncio.sleep(0)
        order.append(item)

    await fan_out([1, 2], work, 8)
    assert sorted(order) == [1, 2]
    order.clear()
    await fan_out(range(5), work, 1)
    assert order == [0, 1, 2, 3, 4]  # one at a time: in order


async def test_the_first_failure_is_raised_and_the_rest_cancelled() -> None:
    started: list[int] = []

    async def work(item: int) -> None:
        started.append(item)
        if item == 1:
            raise KeyError("stream 1")
        await asyncio.Event().wait()  # never ends on its own

    with pytest.raises(KeyError, match="stream 1"):
        await fan_out(range(100), work, 4)
    assert len(started) <= 5  # nothing started after the failure was seen


async def test_a_limit_below_one_is_refused() -> None:
    async def work(item: int) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="at least 1"):
        await fan_out([1], work, 0)


async def test_progress_is_reported_at_most_every_interval() -> None:
    """The clock moves 4 s per item: with a 10 s interval, every third item is reported."""
    now = [0.0]
    reports: list[int] = []

    async def work(item: int) -> None:
        now[0] += 4.0

    await fan_out(range(9), work, 1, reports.append, clock=lambda: now[0])
    assert reports == [3, 6, 9]

"""The request-weight throttle on its own, with time as an argument: the 60 s window, 429 with
the Retry-After until the weight fits, violations inside that window earning the 418 ban, and
the forced-429 fault."""

from __future__ import annotations

import random

from ingestor.simulator.faults import FaultConfig
from ingestor.simulator.throttle import Rejection, Throttle, WeightWindow


def throttle(limit: int = 10, faults: FaultConfig | None = None) -> Throttle:
    return Throttle(limit, 2, 120.0, faults or FaultConfig(), random.Random(0))


def test_window_forgets_weight_after_60_s_and_knows_when_more_fits() -> None:
    w = WeightWindow()
    w.add(0.0, 4)
    w.add(30.0, 6)
    assert w.used(59.9) == 10
    assert w.seconds_until_fits(50.0, 3, 10) == 10.0  # the first entry expires at 60
    assert w.seconds_until_fits(50.0, 7, 10) == 40.0  # both must expire: at 90
    assert w.used(60.0) == 6 and w.used(90.0) == 0


def test_over_the_limit_429_until_it_fits_then_violations_earn_the_ban() -> None:
    t = throttle(limit=10)
    assert t.admit(0.0, 6) is None and t.admit(1.0, 4) is None and t.used(1.0) == 10
    assert t.admit(2.0, 2) == Rejection(429, 58.0)  # the first 6 expire at 60
    assert t.used(2.0) == 10  # a rejected request costs nothing
    assert t.admit(3.0, 1) == Rejection(429, 57.0)  # violation 1, inside Retry-After
    assert t.admit(4.0, 1) == Rejection(418, 120.0)  # violation 2: banned
    assert t.admit(100.0, 1) == Rejection(418, 24.0)  # still banned
    assert t.admit(124.0, 1) is None  # the ban over, the window empty


def test_waiting_the_retry_after_out_resets_the_violations() -> None:
    t = throttle(limit=2)
    assert t.admit(0.0, 2) is None
    assert t.admit(1.0, 1) == Rejection(429, 59.0)
    assert t.admit(2.0, 1) == Rejection(429, 58.0)  # violation 1
    assert t.admit(60.0, 1) is None  # waited: no ban, counting starts over
    assert t.admit(60.5, 2) == Rejection(429, 59.5)
    assert t.admit(61.0, 1) == Rejection(429, 59.0)  # violation 1 again, not 2


def test_forced_429_fault_sets_its_retry_after() -> None:
    faults = FaultConfig(rest_429_p=1.0, rest_429_retry_after_s=3)
    t = throttle(faults=faults)
    assert t.admit(0.0, 1) == Rejection(429, 3.0) and t.retry_until == 3.0
    faults.update({"rest_429_p": 0.0})
    assert t.admit(3.0, 1) is None and t.used(3.0) == 1

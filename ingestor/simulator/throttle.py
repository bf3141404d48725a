"""Binance's REST request-weight limit, as a pure state machine over a real monotonic clock.

Over the per-minute weight limit (or on a forced-429 fault) a request is answered 429 with a
Retry-After; requests sent inside that window count as violations, and enough of them earn a 418
ban. Kept apart from the HTTP layer so the rules read in one place and take time as an argument.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from ingestor.simulator.faults import FaultConfig

__all__ = ["Rejection", "Throttle", "WeightWindow"]

_WINDOW_S = 60.0


class WeightWindow:
    """Request weight used in the last 60 real seconds."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, int]] = deque()
        self._used = 0

    def used(self, now: float) -> int:
        while self._entries and self._entries[0][0] <= now - _WINDOW_S:
            self._used -= self._entries.popleft()[1]
        return self._used

    def add(self, now: float, weight: int) -> None:
        self._entries.append((now, weight))
        self._used += weight

    def seconds_until_fits(self, now: float, weight: int, limit: int) -> float:
        """Real seconds until ``weight`` more fits under ``limit`` as old entries expire."""
        used = self.used(now)
        if used + weight <= limit:
            return 0.0
        for t, w in self._entries:
            used -= w
            if used + weight <= limit:
                return t + _WINDOW_S - now
        return _WINDOW_S


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused request: 429 (over the limit) or 418 (banned), and its Retry-After in seconds."""

    status: int
    retry_after_s: float


class Throttle:
    """Admits requests by weight, remembering the Retry-After window and the ban."""

    def __init__(
        self,
        weight_limit_1m: int,
        ban_after_violations: int,
        ban_duration_s: float,
        faults: FaultConfig,
        rng: random.Random,
    ) -> None:
        self.weight_limit_1m = weight_limit_1m
        self._ban_after = ban_after_violations
        self._ban_duration_s = ban_duration_s
        self._faults = faults
        self._rng = rng
        self._weight = WeightWindow()
        self.retry_until = 0.0  # real monotonic time the current Retry-After window ends
        self._violations = 0
        self._banned_until = 0.0

    def used(self, now: float) -> int:
        """Weight used in the last minute (the ``X-MBX-USED-WEIGHT-1M`` header)."""
        return self._weight.used(now)

    def admit(self, now: float, weight: int) -> Rejection | None:
        """None (and the weight is counted) if the request may run, else why not."""
        rejection = self._check(now, weight)
        if rejection is None:
            self._weight.add(now, weight)
        return rejection

    def _check(self, now: float, weight: int) -> Rejection | None:
        if now < self._banned_until:
            return Rejection(418, self._banned_until - now)
        if now < self.retry_until:
            self._violations += 1
            if self._violations >= self._ban_after:
                self._banned_until = now + self._ban_duration_s
                self._violations = 0
                return Rejection(418, self._ban_duration_s)
            return Rejection(429, self.retry_until - now)
        self._violations = 0
        if self._faults.rest_429_p and self._rng.random() < self._faults.rest_429_p:
            retry = float(self._faults.rest_429_retry_after_s)
            self.retry_until = now + retry
            return Rejection(429, retry)
        limit = self.weight_limit_1m
        if self._weight.used(now) + weight > limit:
            retry = self._weight.seconds_until_fits(now, weight, limit)
            self.retry_until = now + retry
            return Rejection(429, retry)
        return None

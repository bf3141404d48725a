"""Per-stream watermarks: each closed kline is admitted once, in order, with gaps reported.

Sans-I/O. Open times are aligned to the interval (``ingestor.validate`` rejects any other before
a kline gets here). ``next_open[s]`` is the open time the stream ``s`` expects next; -1 means
unknown (the first kline is admitted as is).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from ingestor.reasons import Reason

__all__ = ["Sequencer", "Verdict", "VerdictKind"]


class VerdictKind(Enum):
    ACCEPT = "accept"
    GAP = "gap"  # klines [gap_start, open_time) are missing: fetch them first
    DUPLICATE = Reason.DUPLICATE  # the value: the reject's reason
    OUT_OF_ORDER = Reason.OUT_OF_ORDER


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    gap_start: int = 0


_ACCEPT = Verdict(VerdictKind.ACCEPT)  # immutable: one each, not one per kline
_DUPLICATE = Verdict(VerdictKind.DUPLICATE)
_OUT_OF_ORDER = Verdict(VerdictKind.OUT_OF_ORDER)


class Sequencer:
    def __init__(self, intervals_ms: list[int]) -> None:
        self.interval = np.asarray(intervals_ms, dtype=np.int64)
        self.next_open = np.full(len(intervals_ms), -1, dtype=np.int64)

    def set_watermark(self, sid: int, last_open_ms: int) -> None:
        """The stream's newest stored kline opened at ``last_open_ms``."""
        self.next_open[sid] = last_open_ms + int(self.interval[sid])

    def start_at(self, sid: int, open_ms: int) -> None:
        """The stream has nothing stored: its history begins at ``open_ms``."""
        self.next_open[sid] = open_ms

    def check(self, sid: int, open_ms: int) -> Verdict:
        expected = int(self.next_open[sid])
        if expected < 0 or open_ms == expected:
            return _ACCEPT
        if open_ms > expected:
            return Verdict(VerdictKind.GAP, expected)
        if open_ms == expected - int(self.interval[sid]):
            return _DUPLICATE
        return _OUT_OF_ORDER

    def advance(self, sid: int, open_ms: int) -> None:
        self.next_open[sid] = open_ms + int(self.interval[sid])

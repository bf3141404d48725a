"""The live pipeline's shared parts: what travels on the main queue, and where each stream stands.

The main queue (feed -> gate) carries a :data:`GateItem`: a live closed kline with its raw frame
(kept for the quarantine), a :class:`Probe` asking for a late final from REST, or
:attr:`Stop.STOP`, which ends the gate after a final flush. The warm-up and the gate work on the
same :class:`Tracks`: the streams, their watermarks, their indicator state, the counters, the
REST history and the way out to the write-ahead spool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from ingestor.candles import Candles
from ingestor.decode import ClosedKline
from ingestor.enrich import Enricher
from ingestor.history import History
from ingestor.sequence import Sequencer
from ingestor.state import PipelineState
from ingestor.streams import StreamKey

__all__ = ["GateItem", "GateQueue", "Live", "Probe", "Stop", "Tracks"]


class Live(NamedTuple):
    """A closed kline from the feed, with the frame it came in (quarantined if rejected)."""

    kline: ClosedKline
    raw: str | bytes


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask the gate to fill a stream from its watermark up to now from REST."""

    stream_id: int


class Stop(Enum):
    """The end of the queue: the gate flushes its batch and returns."""

    STOP = "stop"


GateItem = Live | Probe | Stop
GateQueue = asyncio.Queue[GateItem]


@dataclass(frozen=True, slots=True)
class Tracks:
    """Every stream's progress (stream id = index of ``keys``), shared by warm-up and gate."""

    keys: list[StreamKey]
    sequencer: Sequencer  # the watermarks
    enricher: Enricher  # the indicator state
    state: PipelineState  # the counters
    history: History  # closed klines from REST, validated
    emit: Callable[[Candles], None]  # enriched candles to store (the write-ahead spool)

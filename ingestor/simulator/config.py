"""What a simulator run is made of: one object, so a test states its whole exchange in one call.

The meanings of the fields are those of the ``ingestor simulate`` flags (``cli.add_arguments``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingestor.simulator.faults import FaultConfig
from ingestor.simulator.market import DEFAULT_SYMBOLS
from ingestor.streams import StreamKey

__all__ = ["SimConfig"]


@dataclass(slots=True)
class SimConfig:
    """Everything a simulator run is made of; see ``cli.add_arguments`` for the meanings."""

    host: str = "127.0.0.1"
    port: int = 0
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    seed: int = 0
    speed: float = 1.0  # sim seconds per real second
    start_ms: int | None = None  # None: real now floored to the minute
    history_start_ms: int = 0  # sim time of the exchange's first kline (every stream)
    replays: dict[StreamKey, list[list[Any]]] = field(default_factory=dict)  # rows per stream
    update_interval_s: float = 2.0  # real seconds between forming-kline updates
    ping_interval_s: float = 20.0
    pong_timeout_s: float = 60.0
    max_streams_per_connection: int = 1024
    max_incoming_per_s: int = 5
    connection_lifetime_sim_ms: int = 24 * 3_600_000
    weight_limit_1m: int = 6000
    ban_after_violations: int = 2  # requests during a Retry-After window before the 418 ban
    ban_duration_s: float = 120.0
    send_queue_size: int = 10_000  # frames buffered per connection before it is dropped as slow
    max_finals_per_tick: int = 1000  # per stream; more closes than this in one tick are skipped
    faults: FaultConfig = field(default_factory=FaultConfig)
    time_source: Callable[[], float] = time.monotonic  # real monotonic clock (injectable)

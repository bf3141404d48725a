"""What the health endpoint and the metrics read of a running daemon: one ``HealthProbe``.

Built by :func:`service_probe` from the service's own state objects (the pipeline's counters,
each feed connection's ``ConnectionState``, the catch-up event, the main queue, the newest
stored candles) and the database's ping, all made before the service starts, so neither the
health server nor the metrics know the ``Service``, and neither knows the other: both read this
module, which imports neither.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingestor.config import Config
    from ingestor.feed.connection import ConnectionState
    from ingestor.state import PipelineState
    from ingestor.streams import StreamKey

__all__ = [
    "ConnectionStatus",
    "HealthProbe",
    "StreamStatus",
    "package_version",
    "service_probe",
]


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """One websocket connection as health sees it."""

    index: int
    connected: bool
    last_frame_age_s: float | None  # None: no frame yet
    reconnects: int = 0
    rollovers: int = 0


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """One stream's progress: ``last_stored_open_ms`` is -1 while nothing is stored."""

    stream: str  # "BTCUSDT:1m"
    timeframe_ms: int
    last_stored_open_ms: int
    connection: int | None = None

    def lag_ms(self, now_ms: int) -> int | None:
        """Exchange ms since the first closed kline not yet stored closed; 0 when up to date,
        None when nothing is stored. The kline after the newest stored one closes at
        ``last + 2 * timeframe``."""
        if self.last_stored_open_ms < 0:
            return None
        return max(0, now_ms - (self.last_stored_open_ms + 2 * self.timeframe_ms))


def _no_queues() -> Mapping[str, tuple[int, int]]:
    return {}


def _no_rejects() -> Mapping[str, int]:
    return {}


def _no_candles() -> Mapping[str, Mapping[str, Any]]:
    return {}


def _no_failures() -> Mapping[str, str]:
    return {}


@dataclass(slots=True)
class HealthProbe:
    """What the health server and the metrics collector read; the service's state fills it."""

    db_ok: Callable[[], Awaitable[bool]]  # pings the database (bounded by the server)
    connections: Callable[[], Sequence[ConnectionStatus]]
    streams: Callable[[], Sequence[StreamStatus]]
    catching_up: Callable[[], bool]  # True until the startup catch-up from REST is done
    now_ms: Callable[[], int]  # the exchange's clock
    grace_ms: int  # exchange ms a stream may lag before it is stale
    expected_connections: int = 1
    version: str = "unknown"
    queues: Callable[[], Mapping[str, tuple[int, int]]] = field(default=_no_queues)
    rejects: Callable[[], Mapping[str, int]] = field(default=_no_rejects)  # count per reason
    # stream -> its newest stored candle (``ingestor.latest.LatestCandles.rows``)
    candles: Callable[[], Mapping[str, Mapping[str, Any]]] = field(default=_no_candles)
    #: component -> reason of each standing permanent failure (``ingestor.failures``)
    failures: Callable[[], Mapping[str, str]] = field(default=_no_failures)


def package_version() -> str:
    try:
        return metadata.version("bot-core-ingestor")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def service_probe(
    config: Config,
    keys: Sequence[StreamKey],
    state: PipelineState,
    *,
    feed: Mapping[int, ConnectionState],
    caught_up: asyncio.Event,
    now_ms: Callable[[], int],
    db_ok: Callable[[], Awaitable[bool]],
    queues: Callable[[], Mapping[str, tuple[int, int]]] = _no_queues,
    candles: Callable[[], Mapping[str, Mapping[str, Any]]] = _no_candles,
    readiness_grace_ms: int = 10_000,
) -> HealthProbe:
    """The probe of a service from its state objects; ``feed`` maps each kline connection's
    index to its state (filled as the connections are made), ``db_ok`` pings the database.

    A stream is stale when its lag passes ``final_grace_ms + linger_ms + readiness_grace_ms`` of
    real time (scaled to exchange time): a final event may come ``final_grace_ms`` late before
    REST is asked, a batch lingers ``linger_ms``, and the rest is room for REST and the insert.
    """
    per = config.exchange.streams_per_connection
    scale = config.exchange.time_scale
    ing = config.ingest
    grace_ms = int((ing.final_grace_ms + ing.linger_ms + readiness_grace_ms) * scale)

    async def database_ok() -> bool:
        return state.db_ok and await db_ok()

    def connections() -> list[ConnectionStatus]:
        now = time.monotonic()
        return [
            ConnectionStatus(
                index,
                c.connected,
                None if not c.last_frame_at else now - c.last_frame_at,
                c.reconnects,
                c.rollovers,
            )
            for index, c in feed.items()
        ]

    def streams() -> list[StreamStatus]:
        last = state.last_stored_open.tolist()
        return [
            StreamStatus(str(k), k.interval_ms, int(last[i]), i // per) for i, k in enumerate(keys)
        ]

    return HealthProbe(
        db_ok=database_ok,
        connections=connections,
        streams=streams,
        catching_up=lambda: not caught_up.is_set(),
        now_ms=now_ms,
        grace_ms=grace_ms,
        expected_connections=math.ceil(len(keys) / per),
        version=package_version(),
        queues=queues,
        rejects=lambda: state.rejects,
        candles=candles,
        failures=state.failures.reasons,
    )

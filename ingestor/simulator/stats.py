"""The simulator's counters: one shared object that every part bumps, so a test can assert what
the exchange did (``sim.stats``) and a client can read it over ``GET /_sim/stats``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["SimStats"]


@dataclass(slots=True)
class SimStats:
    """Counters, served as JSON at ``GET /_sim/stats``."""

    #: Sim time the newest connection's lifetime started: measure its age from this, not
    #: from a clock read after ``connect`` returned (at high speed that is already late).
    last_connection_opened_ms: int = 0

    connections_open: int = 0
    connections_total: int = 0
    frames_sent: int = 0
    updates_sent: int = 0
    finals_sent: int = 0
    finals_dropped: int = 0
    finals_repeated: int = 0
    finals_skipped: int = 0
    garbage_sent: int = 0
    server_shutdowns_sent: int = 0
    lifetime_disconnects: int = 0
    fault_disconnects: int = 0
    rate_limit_disconnects: int = 0
    stream_limit_rejections: int = 0
    slow_consumer_disconnects: int = 0
    pong_timeouts: int = 0
    pings_sent: int = 0
    ws_messages_received: int = 0
    rest_requests: int = 0
    rest_in_flight: int = 0  # /api/ requests being answered now
    rest_in_flight_max: int = 0  # the most answered at once
    weight_used_1m: int = 0
    rest_429s: int = 0
    rest_418s: int = 0
    rest_400s: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)

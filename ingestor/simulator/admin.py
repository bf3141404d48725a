"""The simulator's own control endpoints under ``/_sim/``: counters, fault knobs, the clock, and
a forced disconnect, so a test or the demo can steer and observe a running exchange over HTTP
(the same controls ``Simulator`` offers in-process)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from ingestor.simulator.faults import FaultConfig
from ingestor.simulator.market import SimClock
from ingestor.simulator.rest import json_response
from ingestor.simulator.stats import SimStats
from ingestor.simulator.streams import Streams
from ingestor.simulator.throttle import Throttle

__all__ = ["Admin"]


class Admin:
    """``GET /_sim/stats``, ``GET|POST /_sim/faults``, ``GET /_sim/clock``, ``POST
    /_sim/disconnect``."""

    def __init__(
        self,
        stats: SimStats,
        faults: FaultConfig,
        clock: SimClock,
        streams: Streams,
        throttle: Throttle,
        time_source: Callable[[], float],
    ) -> None:
        self.stats = stats
        self.faults = faults
        self.clock = clock
        self._streams = streams
        self._throttle = throttle
        self._time_source = time_source

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sim/stats", self._get_stats),
            web.get("/_sim/faults", self._get_faults),
            web.post("/_sim/faults", self._post_faults),
            web.get("/_sim/clock", self._get_clock),
            web.post("/_sim/disconnect", self._post_disconnect),
        ]

    async def _get_stats(self, request: web.Request) -> web.Response:
        self.stats.weight_used_1m = self._throttle.used(self._time_source())
        self.stats.connections_open = self._streams.open_count()
        return json_response(self.stats.to_json())

    async def _get_faults(self, request: web.Request) -> web.Response:
        return json_response(self.faults.to_json())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            self.faults.update(changes)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return web.Response(
                status=400, body=orjson.dumps({"error": str(exc)}), content_type="application/json"
            )
        return json_response(self.faults.to_json())

    async def _get_clock(self, request: web.Request) -> web.Response:
        c = self.clock
        return json_response({"now_ms": c.now_ms(), "start_ms": c.start_ms, "speed": c.speed})

    async def _post_disconnect(self, request: web.Request) -> web.Response:
        return json_response({"disconnected": self._streams.disconnect_all()})

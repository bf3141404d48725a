"""A Binance-spot-compatible exchange on one aiohttp port: websocket kline streams and REST.

Same paths and JSON as Binance (``/stream?streams=``, ``/ws/<name>``, SUBSCRIBE frames,
``/api/v3/klines`` ...), its limits (1024 streams and 5 incoming messages/s per connection,
24 h connection lifetime in *simulated* time, request weight per minute with 429/418), and
fault knobs, so the ingestor can be tested end to end and demoed offline.

This module only composes the parts: ``streams`` (websocket connections and delivery),
``ticker`` (the market clock's loop), ``rest`` with ``throttle`` (the ``/api/v3`` endpoints and
their weight limit), ``admin`` (``/_sim/`` controls), ``faults``, over the pure ``market`` model.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ingestor.simulator.admin import Admin
from ingestor.simulator.config import SimConfig
from ingestor.simulator.faults import FaultConfig, disconnect_schedule
from ingestor.simulator.market import Market, Row, SimClock
from ingestor.simulator.rest import KLINES_WEIGHT, Rest
from ingestor.simulator.stats import SimStats
from ingestor.simulator.streams import Streams
from ingestor.simulator.throttle import Throttle
from ingestor.simulator.ticker import Ticker

__all__ = [
    "KLINES_WEIGHT",
    "SimConfig",
    "SimStats",
    "Simulator",
    "serve_until",
]


class Simulator:
    """The simulated exchange. ``async with Simulator(SimConfig()) as sim:`` serves on
    ``sim.rest_url`` / ``sim.ws_url`` until the block ends."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        cfg = self.config
        self.faults: FaultConfig = cfg.faults
        self.stats = SimStats()
        self.clock = SimClock(cfg.start_ms, cfg.speed, cfg.time_source)
        self.market = Market(
            cfg.seed,
            cfg.symbols,
            cfg.replays,
            anchor_ms=self.clock.start_ms,
            history_start_ms=cfg.history_start_ms,
        )
        self.host = cfg.host
        self.port = 0
        rng = random.Random(cfg.seed)  # one seeded stream of draws for every fault: replayable
        self._throttle = Throttle(
            cfg.weight_limit_1m, cfg.ban_after_violations, cfg.ban_duration_s, self.faults, rng
        )
        self._streams = Streams(cfg, self.stats, self.clock, self.market, self.faults, rng)
        self._ticker = Ticker(cfg, self.stats, self.clock, self.market, self._streams)
        self._rest = Rest(cfg, self.stats, self.clock, self.market, self.faults, self._throttle)
        self._admin = Admin(
            self.stats, self.faults, self.clock, self._streams, self._throttle, cfg.time_source
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._rest.middleware])
        app.router.add_routes(self._streams.routes())
        app.router.add_routes(self._rest.routes())
        app.router.add_routes(self._admin.routes())
        # 1024 stream names make a ~25 kB request line; aiohttp's default allows 8 kB
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=1.0, max_line_size=1 << 16
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._tasks = [
            asyncio.create_task(self._ticker.run(), name="sim-market"),
            asyncio.create_task(
                disconnect_schedule(self.faults, self.config.time_source, self.disconnect_all),
                name="sim-disconnect",
            ),
        ]

    async def stop(self) -> None:
        """Send ``serverShutdown`` to every connection, close them, stop serving."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._streams.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def _retry_until(self) -> float:
        """The Retry-After window's end; tests reset it to skip waiting it out."""
        return self._throttle.retry_until

    @_retry_until.setter
    def _retry_until(self, value: float) -> None:
        self._throttle.retry_until = value

    # -- runtime controls ------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> None:
        """Change fault knobs (same names and validation as ``POST /_sim/faults``)."""
        self.faults.update(changes)

    def disconnect_all(self) -> int:
        """Abort every websocket connection (no close frame, like a network drop)."""
        return self._streams.disconnect_all()

    def klines_rows(
        self, symbol: str, timeframe: str, start: int | None, end: int | None, limit: int
    ) -> list[Row]:
        """What ``GET /api/v3/klines`` answers now (see ``Rest.klines_rows``)."""
        return self._rest.klines_rows(symbol, timeframe, start, end, limit)


async def serve_until(
    config: SimConfig,
    stop: asyncio.Event,
    on_ready: Callable[[Simulator], None] | None = None,
) -> None:
    """Run a simulator until ``stop`` is set (the standalone / CLI entry)."""
    async with Simulator(config) as sim:
        if on_ready is not None:
            on_ready(sim)
        await stop.wait()

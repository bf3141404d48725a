"""HTTP health endpoint owned by the daemon's own event loop (aiohttp ``AppRunner``/``TCPSite``).

``GET /healthz``  200 whenever the loop answers (liveness: the process is not wedged).
``GET /readyz``   200 only when the database answers, every feed connection is up and no stream's
                  newest stored kline is older than its timeframe plus a grace (exchange time);
                  otherwise 503 and JSON naming the failed checks: ``status`` is ``degraded``
                  (database or feed down, stream stale) or ``catching_up`` (after a restart).
``GET /metrics``  Prometheus text from the daemon's own registry (``ingestor.metrics``).
``GET /status``   JSON for people: per stream the newest stored candle, lag and connection;
                  readiness checks, rejects by reason (``ingestor status`` renders it).

The server knows nothing of the ``Service``: it reads a ``HealthProbe``, a handful of callbacks
the service fills (``probe_from_service`` builds it from a running service).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from ingestor.errors import ConfigError
from ingestor.metrics import CONTENT_TYPE, Metrics

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from ingestor.config import Config
    from ingestor.feed.connection import FeedConnection
    from ingestor.rest import ExchangeClock
    from ingestor.state import PipelineState
    from ingestor.streams import StreamKey

__all__ = [
    "ConnectionStatus",
    "HealthProbe",
    "HealthServer",
    "Readiness",
    "ServiceView",
    "StreamStatus",
    "evaluate",
    "package_version",
    "probe_from_service",
]

log = logging.getLogger(__name__)


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


@dataclass(slots=True)
class HealthProbe:
    """What the health server and the metrics collector read; the service fills it."""

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


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    status: str  # ready | catching_up | degraded
    failed: tuple[str, ...]
    checks: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "failed": list(self.failed), "checks": self.checks}


async def _db_ok(probe: HealthProbe, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            return await probe.db_ok()
    except TimeoutError:
        return False
    except Exception as exc:  # a probe that raises is a failed probe, and the server lives on
        log.warning("database probe failed: %s: %s", type(exc).__name__, exc)
        return False


async def evaluate(probe: HealthProbe, db_timeout_s: float = 1.0) -> Readiness:
    """Run every readiness check once."""
    db = await _db_ok(probe, db_timeout_s)
    conns = probe.connections()
    down = [c.index for c in conns if not c.connected]
    feed_ok = len(conns) >= probe.expected_connections and not down
    now = probe.now_ms()
    stale: list[dict[str, Any]] = []
    for st in probe.streams():
        lag = st.lag_ms(now)
        if lag is None or lag > probe.grace_ms:
            stale.append({"stream": st.stream, "lag_s": None if lag is None else lag / 1000})
    catching_up = probe.catching_up()
    checks: dict[str, Any] = {
        "database": {"ok": db},
        "feed": {
            "ok": feed_ok,
            "connections": len(conns),
            "expected": probe.expected_connections,
            "down": down,
        },
        "streams": {
            "ok": not stale,
            "grace_s": probe.grace_ms / 1000,
            "stale": stale[:20],
            "stale_count": len(stale),
        },
        "catching_up": {"ok": not catching_up},
    }
    failed = tuple(name for name, check in checks.items() if not check["ok"])
    if not failed:
        status = "ready"
    elif not db or (not feed_ok and not catching_up):
        status = "degraded"
    elif catching_up:
        status = "catching_up"
    else:
        status = "degraded"
    return Readiness(not failed, status, failed, checks)


def _iso(ms: int) -> str | None:
    if ms < 0:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class HealthServer:
    """``async with HealthServer(host, port, probe, metrics) as hs:`` serves until the block ends.

    ``port=0`` binds a free port; ``start()`` returns the bound one (also ``self.port``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        probe: HealthProbe,
        metrics: Metrics | None = None,
        *,
        db_timeout_s: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.probe = probe
        self.metrics = metrics
        self.db_timeout_s = db_timeout_s
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                "health.port", f"cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])  # the bound port, also when 0 was asked
        self._started = time.monotonic()
        log.info("health endpoint on http://%s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ----------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "version": self.probe.version})

    async def _readyz(self, request: web.Request) -> web.Response:
        verdict = await self._evaluate()
        return web.json_response(verdict.body(), status=200 if verdict.ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            raise web.HTTPNotFound(text="metrics are not enabled")
        await self._evaluate()
        resp = web.Response(body=self.metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    async def _status(self, request: web.Request) -> web.Response:
        verdict = await self._evaluate()
        probe = self.probe
        now = probe.now_ms()
        conns = {c.index: c for c in probe.connections()}
        candles = probe.candles()
        streams = []
        for st in probe.streams():
            lag = st.lag_ms(now)
            conn = conns.get(st.connection) if st.connection is not None else None
            streams.append(
                {
                    "stream": st.stream,
                    "timeframe_ms": st.timeframe_ms,
                    "last_stored_open_ms": st.last_stored_open_ms,
                    "last_stored_open": _iso(st.last_stored_open_ms),
                    "lag_s": None if lag is None else lag / 1000,
                    "connection": st.connection,
                    "connected": None if conn is None else conn.connected,
                    "candle": candles.get(st.stream),
                }
            )
        body = {
            "version": probe.version,
            "status": verdict.status,
            "ready": verdict.ready,
            "failed": list(verdict.failed),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "exchange_time_ms": now,
            "database": {"ok": verdict.checks["database"]["ok"]},
            "connections": [
                {
                    "index": c.index,
                    "connected": c.connected,
                    "last_frame_age_s": c.last_frame_age_s,
                    "reconnects": c.reconnects,
                }
                for c in conns.values()
            ],
            "queues": {k: {"depth": n, "capacity": b} for k, (n, b) in probe.queues().items()},
            "streams": streams,
            "checks": verdict.checks,
            "rejects": dict(probe.rejects()),
        }
        return web.json_response(body)

    async def _evaluate(self) -> Readiness:
        verdict = await evaluate(self.probe, self.db_timeout_s)
        if self.metrics is not None:
            self.metrics.record_readiness(verdict.ready, verdict.checks["database"]["ok"])
        return verdict


# -- the service's side ------------------------------------------------------------------------


class ServiceView(Protocol):
    """What ``probe_from_service`` reads from the running ``Service``."""

    config: Config
    keys: list[StreamKey]
    state: PipelineState
    connections: list[FeedConnection]
    clock: ExchangeClock
    db: AsyncDatabase[dict[str, Any]] | None
    caught_up: asyncio.Event


def package_version() -> str:
    try:
        return metadata.version("bot-core-ingestor")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def probe_from_service(
    svc: ServiceView,
    queues: Callable[[], Mapping[str, tuple[int, int]]] = _no_queues,
    readiness_grace_ms: int = 10_000,
    candles: Callable[[], Mapping[str, Mapping[str, Any]]] = _no_candles,
) -> HealthProbe:
    """The probe of a running service.

    A stream is stale when its lag passes ``final_grace_ms + linger_ms + readiness_grace_ms`` of
    real time (scaled to exchange time): a final event may come ``final_grace_ms`` late before
    REST is asked, a batch lingers ``linger_ms``, and the rest is room for REST and the insert.
    """
    cfg = svc.config
    per = cfg.exchange.streams_per_connection
    scale = cfg.exchange.time_scale
    grace_ms = int((cfg.ingest.final_grace_ms + cfg.ingest.linger_ms + readiness_grace_ms) * scale)

    async def db_ok() -> bool:
        if svc.db is None or not svc.state.db_ok:
            return False
        await svc.db.command("ping")
        return True

    def connections() -> list[ConnectionStatus]:
        now = time.monotonic()
        return [
            ConnectionStatus(
                c.index,
                c.state.connected,
                None if not c.state.last_frame_at else now - c.state.last_frame_at,
                c.state.reconnects,
                c.state.rollovers,
            )
            for c in svc.connections
        ]

    def streams() -> list[StreamStatus]:
        last = svc.state.last_stored_open.tolist()
        return [
            StreamStatus(str(k), k.interval_ms, int(last[i]), i // per)
            for i, k in enumerate(svc.keys)
        ]

    return HealthProbe(
        db_ok=db_ok,
        connections=connections,
        streams=streams,
        catching_up=lambda: not svc.caught_up.is_set(),
        now_ms=svc.clock.now_ms,
        grace_ms=grace_ms,
        expected_connections=math.ceil(len(svc.keys) / per),
        version=package_version(),
        queues=queues,
        rejects=lambda: svc.state.rejects,
        candles=candles,
    )

"""HTTP health endpoint owned by the daemon's own event loop (``ingestor.httpserver``).

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

Whatever the request rate, readiness (one database ping) is evaluated at most once per
``period_s`` and shared by ``/readyz``, ``/status`` and ``/metrics``; concurrent requests wait
for the one evaluation in flight, and the ``/status`` and ``/metrics`` bodies are rendered once
per evaluation. The port is served by :class:`ingestor.httpserver.HttpServer` (header-read
timeout, short keep-alive, a cap on open connections), so clients cannot starve the daemon of
descriptors or loop time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import orjson

from ingestor.errors import ConfigError
from ingestor.httpserver import HttpServer, Response
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


def _no_failures() -> Mapping[str, str]:
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
    #: component -> reason of each standing permanent failure (``ingestor.failures``)
    failures: Callable[[], Mapping[str, str]] = field(default=_no_failures)


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
    if reasons := dict(probe.failures()):
        checks["permanent_errors"] = {"ok": False, "reasons": reasons}
    failed = tuple(name for name, check in checks.items() if not check["ok"])
    if not failed:
        status = "ready"
    elif not db or "permanent_errors" in checks or (not feed_ok and not catching_up):
        status = "degraded"
    elif catching_up:
        status = "catching_up"
    else:
        status = "degraded"
    return Readiness(not failed, status, failed, checks)


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
        period_s: float = 1.0,
        header_timeout_s: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        self.host = host
        self.port = port
        self.probe = probe
        self.metrics = metrics
        self.db_timeout_s = db_timeout_s
        self.period_s = period_s
        self.http = HttpServer(
            {
                "/healthz": self._healthz,
                "/readyz": self._readyz,
                "/metrics": self._metrics,
                "/status": self._status,
            },
            header_timeout_s=header_timeout_s,
            max_connections=max_connections,
        )
        self._started = time.monotonic()
        self._verdict: Readiness | None = None
        self._verdict_at = -math.inf
        self._pending: asyncio.Future[Readiness] | None = None
        self._status_body: tuple[Readiness, bytes] | None = None
        self._metrics_body: tuple[Readiness, bytes] | None = None
        self.evaluations = 0

    async def start(self) -> int:
        try:
            self.port = await self.http.start(self.host, self.port)
        except OSError as exc:
            raise ConfigError(
                "health.port", f"cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self._started = time.monotonic()
        log.info("health endpoint on http://%s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        await self.http.close()
        if self._pending is not None:
            self._pending.cancel()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ----------------------------------------------------------------------------

    async def _healthz(self) -> Response:
        return _json({"status": "alive", "version": self.probe.version})

    async def _readyz(self) -> Response:
        verdict = await self.readiness()
        return _json(verdict.body(), 200 if verdict.ready else 503)

    async def _metrics(self) -> Response:
        if self.metrics is None:
            return Response(404, b"metrics are not enabled", "text/plain")
        verdict = await self.readiness()
        if self._metrics_body is None or self._metrics_body[0] is not verdict:
            self._metrics_body = (verdict, self.metrics.render())
        return Response(200, self._metrics_body[1], CONTENT_TYPE)

    async def _status(self) -> Response:
        verdict = await self.readiness()
        if self._status_body is None or self._status_body[0] is not verdict:
            self._status_body = (verdict, orjson.dumps(self._status_dict(verdict)))
        return Response(200, self._status_body[1])

    def _status_dict(self, verdict: Readiness) -> dict[str, Any]:
        probe = self.probe
        now = probe.now_ms()
        conns = {c.index: c for c in probe.connections()}
        connected = {i: c.connected for i, c in conns.items()}
        candles = probe.candles()
        sts = probe.streams()
        n = len(sts)
        last = np.fromiter((st.last_stored_open_ms for st in sts), np.int64, n)
        tf = np.fromiter((st.timeframe_ms for st in sts), np.int64, n)
        lags = (np.maximum(0, now - (last + 2 * tf)) / 1000).tolist()
        isos = np.datetime_as_string(last.astype("datetime64[ms]"), unit="ms").tolist()
        streams = [
            {
                "stream": st.stream,
                "timeframe_ms": st.timeframe_ms,
                "last_stored_open_ms": st.last_stored_open_ms,
                "last_stored_open": None if st.last_stored_open_ms < 0 else f"{iso}+00:00",
                "lag_s": None if st.last_stored_open_ms < 0 else lag,
                "connection": st.connection,
                "connected": None if st.connection is None else connected.get(st.connection),
                "candle": candles.get(st.stream),
            }
            for st, lag, iso in zip(sts, lags, isos, strict=True)
        ]
        return {
            "version": probe.version,
            "status": verdict.status,
            "ready": verdict.ready,
            "failed": list(verdict.failed),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "exchange_time_ms": now,
            "database": {"ok": verdict.checks["database"]["ok"]},
            "permanent_errors": dict(probe.failures()),
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

    async def readiness(self) -> Readiness:
        """The verdict of at most ``period_s`` ago, or of the one evaluation in flight."""
        if self._verdict is not None and time.monotonic() - self._verdict_at < self.period_s:
            return self._verdict
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._evaluate())
        return await asyncio.shield(self._pending)

    async def _evaluate(self) -> Readiness:
        try:
            verdict = await evaluate(self.probe, self.db_timeout_s)
        finally:
            self._pending = None
        self.evaluations += 1
        self._verdict, self._verdict_at = verdict, time.monotonic()
        if self.metrics is not None:
            self.metrics.record_readiness(verdict.ready, verdict.checks["database"]["ok"])
        return verdict


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(status, orjson.dumps(body))


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
        failures=svc.state.failures.reasons,
    )

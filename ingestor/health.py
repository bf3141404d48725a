"""HTTP health endpoint owned by the daemon's own event loop (``ingestor.httpserver``).

``GET /healthz``  200 whenever the loop answers (liveness: the process is not wedged).
``GET /readyz``   200 only when the database answers, every feed connection is up and no stream's
                  newest stored kline is older than its timeframe plus a grace (exchange time);
                  otherwise 503 and JSON naming the failed checks: ``status`` is ``degraded``
                  (database or feed down, stream stale) or ``catching_up`` (after a restart).
``GET /metrics``  Prometheus text from the daemon's own registry (``ingestor.metrics``).
``GET /status``   JSON for people: per stream the newest stored candle, lag and connection;
                  readiness checks, rejects by reason (``ingestor status`` renders it).

The server knows nothing of the ``Service``: it reads a ``HealthProbe`` (``ingestor.probe``, built
from the service's state objects) and serves ``/metrics`` from an :class:`Exporter` (the daemon's
``ingestor.metrics.Metrics``), which it tells each readiness verdict.

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
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from ingestor.errors import ConfigError
from ingestor.httpserver import HttpServer, Response
from ingestor.probe import HealthProbe

__all__ = ["Exporter", "HealthServer", "Readiness", "evaluate"]

log = logging.getLogger(__name__)


class Exporter(Protocol):
    """What ``/metrics`` needs: a rendered exposition and the latest verdict to publish."""

    content_type: str

    def render(self) -> bytes: ...

    def record_readiness(self, ready: bool, db_up: bool) -> None: ...


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
        metrics: Exporter | None = None,
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
        return Response(200, self._metrics_body[1], self.metrics.content_type)

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

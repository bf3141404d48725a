"""The real ``Service`` in one process, flooded by the simulator: CPU per kline, latency, RSS.

``run_inproc(streams, seconds, sink="null")`` starts the simulator in its own process
(``ingestor simulate``, accelerated clock), then a fresh child process that builds the daemon's
``Service`` through ``ingestor.assemble.build_service`` (the production parts; only the candle
store is replaced when ``sink="null"``) on uvloop, lets it catch up, and measures ``seconds`` of
steady flow:

* ``cpu_s_per_kline``: ``time.process_time()`` of the service's process over the window (all of
  it: feed, decode, gate, indicators, journal, BSON, insert, health), divided by the klines the
  store acknowledged in it. The simulator runs in its own process and is not counted; with
  ``sink="embedded"`` neither is the embedded database server (its own child process).
* ``close_to_commit_ms``: per candle acknowledged in the window, real milliseconds from the
  kline's close (exchange time, the service's own synced ``ExchangeClock``) to the store's
  return: p50, p99, max.
* ``peak_rss_mb``: the service process's peak resident set (VmHWM).
* ``klines_per_s`` acknowledged, beside ``offered_klines_per_s`` (finals the simulator sent in
  the window): when these are close the simulator, not the service, set the pace, and the
  latency includes the simulator's own lag behind its clock.

``streams``: ``"12x2"`` is 12 symbols x (1m, 5m) at 600x speed (a 1m kline closes every 0.1 s);
``"2400"`` is 2,400 symbols x 1m at 600x speed (24,000 klines/s offered). Generally
``"<symbols>[x<timeframes>]"`` with up to 6 timeframes (1m 5m 15m 1h 4h 1d).

The simulator's REST history is empty (it starts in ten years), so the startup is one small
request per stream and the gate's first fill of each stream finds nothing: at 600x a real
history would grow by 10 hours of klines per stream for every real minute the warm-up of
thousands of streams takes, and the flood would meet a service still catching up. The live path
measured (feed, decode, gate, batch, indicators, journal, store) is the same either way; the
indicators start cold.

``python -m bench.service_inproc 12x2 20 [null|embedded]`` prints the dict as JSON.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.proc import peak_rss_mb
from bench.simproc import SimProcess

__all__ = ["SPEED", "parse_streams", "run_inproc"]

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SPEED = 600.0  # sim seconds per real second
TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
SINKS = ("null", "embedded")


def parse_streams(streams: str) -> tuple[list[str], list[str]]:
    """``"12x2"`` -> 12 symbols, the first 2 timeframes; ``"2400"`` -> 2,400 symbols, 1m."""
    n, _, m = streams.partition("x")
    symbols, timeframes = int(n), int(m or 1)
    if symbols < 1 or not 1 <= timeframes <= len(TIMEFRAMES):
        raise ValueError(f"streams {streams!r}: <symbols>[x<1..{len(TIMEFRAMES)} timeframes]")
    return [f"S{i:04d}USDT" for i in range(symbols)], list(TIMEFRAMES[:timeframes])


def run_inproc(streams: str, seconds: float, sink: str = "null") -> dict[str, Any]:
    """Measure the real Service (see the module docstring); the figures as a dict."""
    if sink not in SINKS:
        raise ValueError(f"sink {sink!r}: one of {SINKS}")
    symbols, timeframes = parse_streams(streams)
    start = int(time.time() * 1000) // 60_000 * 60_000
    no_history = start + 10 * 365 * 86_400_000  # REST history empty: no catch-up to wait for
    sim = SimProcess(symbols, SPEED, ["--start", str(start), "--history-start", str(no_history)])
    try:
        args = {
            "symbols": symbols,
            "timeframes": timeframes,
            "seconds": seconds,
            "sink": sink,
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
        }
        out = subprocess.run(
            [PY, "-m", "bench.service_inproc", "--child", json.dumps(args)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=seconds + 600,
            check=False,
        )
        if out.returncode:
            raise RuntimeError(f"service bench failed: {out.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        sim.close()
    result.update(streams=len(symbols) * len(timeframes), spec=streams, sink=sink, speed=SPEED)
    return result


# -- the child: the Service itself ------------------------------------------------------------


class _Timed:
    """The store the service writes through, timing each acknowledged batch."""

    def __init__(self, store: Any, clock: Any) -> None:
        self._store = store
        self._clock = clock
        self.measuring = False
        self.acked = 0
        self.latencies: list[Any] = []

    async def insert(self, candles: Any, *, suspect: bool = False) -> int:
        n: int = await self._store.insert(candles, suspect=suspect)
        if self.measuring:
            self.acked += len(candles)
            self.latencies.append(self._clock.real_seconds_since(candles.close_time + 1) * 1000)
        return n

    async def history(self, key: Any, n: int, before_ms: int | None = None) -> Any:
        return await self._store.history(key, n, before_ms)


async def _measure(args: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    from ingestor.assemble import build_service
    from ingestor.config import (
        Config,
        ExchangeConfig,
        HealthConfig,
        IngestConfig,
        MongoConfig,
        PositionsConfig,
        ServiceConfig,
    )
    from ingestor.rest import ExchangeClock
    from ingestor.store.sink import NullStore
    from ingestor.store.writer import CandleStore

    config = Config(
        exchange=ExchangeConfig(ws_url=args["ws_url"], rest_url=args["rest_url"], time_scale=SPEED),
        mongodb=MongoConfig(uri="", database="bench_service"),
        ingest=IngestConfig(
            symbols=tuple(args["symbols"]), timeframes=tuple(args["timeframes"]), warmup_candles=100
        ),
        health=HealthConfig(port=0),
        positions=PositionsConfig(enabled=False),
        service=ServiceConfig(data_dir=str(data_dir), log_level="WARNING"),
    )
    clock = ExchangeClock(SPEED)
    timed: list[_Timed] = []

    def store(db: Any, registry: Any, state: Any) -> Any:
        inner: Any = (
            NullStore(registry.keys)
            if args["sink"] == "null"
            else CandleStore(db, registry.keys, on_state=state.set_db_ok, failures=state.failures)
        )
        timed.append(_Timed(inner, clock))
        return timed[-1]

    svc = build_service(config, clock=clock, store=store)
    stop = asyncio.Event()
    async with svc:
        run = asyncio.create_task(svc.run(stop))
        ready = asyncio.create_task(svc.caught_up.wait())
        await asyncio.wait({run, ready}, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            await run  # startup failed: raise why
        for _ in range(1200):  # every feed connection up (at most 2 minutes)
            feed = svc.observed.feed
            expected = svc.health.probe.expected_connections
            if len(feed) >= expected and all(s.connected for s in feed.values()):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # past the catch-up's last batches
        sink = timed[0]
        finals0 = await asyncio.to_thread(_finals_sent, args["rest_url"])
        sink.measuring = True
        frames0, cpu0, t0 = svc.state.frames, time.process_time(), time.perf_counter()
        await asyncio.sleep(args["seconds"])
        sink.measuring = False
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        frames = svc.state.frames - frames0
        offered = await asyncio.to_thread(_finals_sent, args["rest_url"]) - finals0
        stop.set()
        await run
    lat = np.concatenate(sink.latencies) if sink.latencies else np.zeros(0)
    out: dict[str, Any] = {
        "klines_acked": sink.acked,
        "frames": frames,
        "seconds": round(wall, 2),
        "cpu_s": round(cpu, 3),
        "klines_per_s": round(sink.acked / wall),
        # what the simulator sent meanwhile: the flood's ceiling on a loaded machine
        "offered_klines_per_s": round(offered / wall),
        "cpu_s_per_kline": cpu / sink.acked if sink.acked else None,
        "cpu_us_per_kline": round(cpu / sink.acked * 1e6, 1) if sink.acked else None,
        "rejects": sum(svc.state.rejects.values()),
        "rest_klines": svc.state.rest_klines,
    }
    if lat.size:
        out["close_to_commit_ms"] = {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p99": round(float(np.percentile(lat, 99)), 1),
            "max": round(float(lat.max()), 1),
            "n": int(lat.size),
        }
    return out


def _finals_sent(rest_url: str) -> int:
    with urllib.request.urlopen(f"{rest_url}/_sim/stats", timeout=10) as r:
        return int(json.loads(r.read())["finals_sent"])


def _child(raw: str) -> None:
    import uvloop

    from ingestor.cli import _one_blas_thread

    _one_blas_thread()  # as `ingestor run` does
    args = json.loads(raw)
    with tempfile.TemporaryDirectory() as tmp:
        result = uvloop.run(_measure(args, Path(tmp)))
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2])
    else:
        spec, secs = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
        print(json.dumps(run_inproc(spec, secs, *sys.argv[3:4]), indent=2))

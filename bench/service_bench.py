"""The real daemon (``python -m ingestor run``) against the naive consumer, per stored kline.

The simulator runs in its own process (``ingestor simulate``), the database is a SecantusDB this
bench starts (one per scenario, so the two consumers write into the same kind of database), the
daemon is a child process with its own config, the naive consumer (``bench/naive_consumer.py``:
websockets + json + dict + ``Decimal128(str)`` + TA-Lib over 500 closes + ``insert_one`` per
kline) another child process on the same flood. Only the consumer process is measured:

* CPU: the daemon's ``utime + stime`` from ``/proc/<pid>/stat`` read once its startup catch-up
  is over (``/readyz`` no longer says ``catching_up`` and ``ingestor_journal_depth`` is down to
  ``DRAINED_BATCHES`` and two seconds in a row stored at most 1.5x the klines offered per
  second while ``/readyz`` says ``ready``, plus ``WARM_S``) and again at the end. ``ready``
  matters: a daemon still working off its cold start's gap fills stores about the offered rate
  too (large REST batches, hours of exchange time behind), with its journal drained, but its
  streams are stale and it is not ready. Such a run is measured anyway and reported with
  ``steady_state`` false and the readiness it had;
  the klines stored between the two readings are counted in the database. The naive consumer
  reads its own ``process_time`` after the same warm-up and counts its acknowledged inserts.
* ``flood``: 12 symbols x 2 timeframes at an accelerated clock (the issue's replay).
* ``streams_2400``: 1,200 symbols x 2 timeframes; also the daemon's peak RSS (``VmHWM``).
* ``latency_48``: 24 symbols x 2 timeframes at 60x, a 20 ms linger (as ``hotpath``); the p99 of
  the daemon's own ``ingestor_commit_latency_seconds`` histogram over the measured window (its
  bucket bound) and the share within 50 ms.
* ``floor`` (flood only): ``bench/floor_consumer.py`` on the same flood, the least any consumer
  can spend per kline on this stack (picows, orjson, one ``insert_many`` per close time of
  pre-encoded documents); naive / floor is the ceiling of the ratio, ``daemon_over_floor_us``
  what the daemon's own work costs per kline.
* ``cryptofeed`` (flood only, when ``BENCH_CRYPTOFEED_PYTHON`` names an interpreter that has
  ``cryptofeed`` and ``motor``): the collector issue 17 names, on the same flood
  (``bench/cryptofeed_child.py``), measured as the daemon is; ``daemon_over_cryptofeed`` is
  the daemon's CPU per kline over its.
* null sink: the real ``Service`` in-process with a null sink (``bench/service_inproc.py``),
  when that module exists.

``BENCH_SERVICE_SECONDS`` sets the measured window (default 20 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.proc import peak_rss_mb
from bench.simproc import SimProcess

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SECONDS = float(os.environ.get("BENCH_SERVICE_SECONDS", "20"))
WARM_S = 3.0  # after the catch-up: connections settled, the first live batches stored
DRAINED_BATCHES = 2  # journal depth at which the catch-up counts as stored
STARTUP_S = 420.0  # the cold start of 2,400 streams (~265 s here), then the backlog
TIMEFRAMES = ("1m", "5m")
INTERVAL_S = {"1m": 60, "5m": 300}
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    name: str
    symbols: int
    speed: float
    naive: bool
    latency: bool = False
    #: A fresh listing (the exchange's history starts with the run): the cold start of 2,400
    #: streams then fetches no history pages (it still takes minutes here: one stream at a time).
    listing: bool = False
    linger_ms: int = 40  # the daemon's default
    #: Also run the floor (``bench/floor_consumer.py``): the least any consumer can spend.
    floor: bool = False


SCENARIOS = (
    Scenario("flood", 12, 1200.0, naive=True, floor=True),
    Scenario("streams_2400", 1200, 120.0, naive=True, listing=True),
    Scenario("latency_48", 24, 60.0, naive=False, latency=True, linger_ms=20),
)


def _symbols(n: int) -> list[str]:
    return [f"S{i:04d}USDT" for i in range(n)]


def _cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included, not its children), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _latency_buckets(metrics: str) -> dict[float, float]:
    """Cumulative ``ingestor_commit_latency_seconds`` buckets: bound -> count."""
    out: dict[float, float] = {}
    pat = re.compile(r'^ingestor_commit_latency_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)
    for le, count in pat.findall(metrics):
        out[float(le)] = float(count)
    return out


def _p99(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """The smallest bucket bounds holding 50% and 99% of the window's observations."""
    bounds = sorted(after)
    diff = [after[b] - before.get(b, 0.0) for b in bounds]
    total = diff[-1]
    if total <= 0:
        return {"n": 0}
    p99 = next(b for b, c in zip(bounds, diff, strict=True) if c >= 0.99 * total)
    p50 = next(b for b, c in zip(bounds, diff, strict=True) if c >= 0.5 * total)
    return {
        "n": int(total),
        "p50_le_s": p50,
        "p99_le_s": p99,
        "share_le_50ms": round(diff[bounds.index(0.05)] / total, 4) if 0.05 in after else None,
    }


def _config(
    path: Path, sim: SimProcess, uri: str, symbols: list[str], port: int, data: Path, linger_ms: int
) -> None:
    path.write_text(
        f'[exchange]\nws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\n'
        f"time_scale = {sim.speed}\n"
        f'[mongodb]\nuri = "{uri}"\ndatabase = "bench_service"\n'
        f"[ingest]\nsymbols = {json.dumps(symbols)}\ntimeframes = {json.dumps(TIMEFRAMES)}\n"
        f"warmup_candles = 100\nlinger_ms = {linger_ms}\n"
        f"[health]\nport = {port}\n[positions]\nenabled = false\n"
        f'[service]\ndata_dir = "{data}"\nlog_format = "text"\nlog_level = "WARNING"\n'
    )


async def _stored(uri: str, db: str) -> int:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        return int(await client[db]["market_data"].count_documents({}))
    finally:
        await client.close()


async def _daemon(sc: Scenario, sim: SimProcess, uri: str, work: Path) -> dict[str, Any]:
    from ingestor.embedded import free_port

    port = free_port()
    config = work / f"{sc.name}.toml"
    _config(config, sim, uri, _symbols(sc.symbols), port, work / f"{sc.name}-data", sc.linger_ms)
    log = (work / f"{sc.name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "ingestor", "run", "--config", str(config),
        cwd=ROOT, stdout=log, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        t_start = time.monotonic()
        while True:  # the startup catch-up: until /readyz stops saying catching_up
            if proc.returncode is not None:
                raise RuntimeError(
                    f"daemon exited: {(work / f'{sc.name}.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError):
                _, body = await asyncio.to_thread(_get, f"{base}/readyz")
                if json.loads(body).get("status") != "catching_up":
                    break
            if time.monotonic() - t_start > STARTUP_S:
                raise RuntimeError(f"{sc.name}: daemon still catching up after {STARTUP_S}s")
            await asyncio.sleep(0.5)
        steady = True  # False: the backlog never drained within STARTUP_S
        while True:  # and until the catch-up's batches are stored (the journal drained)
            metrics = (await asyncio.to_thread(_get, f"{base}/metrics"))[1].decode()
            depth = re.search(r"^ingestor_journal_depth (\S+)$", metrics, re.M)
            if depth is not None and float(depth.group(1)) <= DRAINED_BATCHES:
                break
            if time.monotonic() - t_start > STARTUP_S:
                steady = False  # behind the database: measured anyway, and said so
                break
            await asyncio.sleep(0.5)
        # and until the live rate holds: no second stores more than 1.5x the klines offered
        # per second (a backlog still being written would).
        # and /readyz says ready (live: no stream stale, the database up).
        offered = sc.symbols * sum(sc.speed / (INTERVAL_S[tf]) for tf in TIMEFRAMES)
        calm, last = 0, await _stored(uri, "bench_service")
        while steady and calm < 2:
            await asyncio.sleep(1.0)
            now = await _stored(uri, "bench_service")
            _, body = await asyncio.to_thread(_get, f"{base}/readyz")
            live = json.loads(body).get("status") == "ready"
            calm = calm + 1 if live and now - last <= 1.5 * offered + 1 else 0
            last = now
            if time.monotonic() - t_start > STARTUP_S:
                steady = False
        startup_s = time.monotonic() - t_start
        at_start = json.loads((await asyncio.to_thread(_get, f"{base}/readyz"))[1])
        await asyncio.sleep(WARM_S)
        hist0 = _latency_buckets((await asyncio.to_thread(_get, f"{base}/metrics"))[1].decode())
        n0, cpu0, t0 = await _stored(uri, "bench_service"), _cpu_s(proc.pid), time.monotonic()
        await asyncio.sleep(SECONDS)
        cpu1, t1 = _cpu_s(proc.pid), time.monotonic()
        n1 = await _stored(uri, "bench_service")
        hist1 = _latency_buckets((await asyncio.to_thread(_get, f"{base}/metrics"))[1].decode())
        at_end = json.loads((await asyncio.to_thread(_get, f"{base}/readyz"))[1])
        out: dict[str, Any] = {
            "startup_s": round(startup_s, 1),
            "steady_state": steady,
            "klines": n1 - n0,
            "seconds": round(t1 - t0, 2),
            "cpu_s": round(cpu1 - cpu0, 2),
            "us_per_kline": round((cpu1 - cpu0) / max(n1 - n0, 1) * 1e6, 1),
            "peak_rss_mb": peak_rss_mb(proc.pid),
            "status_at_start": at_start.get("status"),
            "failed_at_start": at_start.get("failed"),
            "status_at_end": at_end.get("status"),
            "failed_at_end": at_end.get("failed"),
        }
        if sc.latency:
            out["commit_latency"] = _p99(hist0, hist1)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            out["exit_code"] = await proc.wait()
        return out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


async def _consumer(kind: str, sc: Scenario, sim: SimProcess, uri: str) -> dict[str, Any]:
    """The naive consumer or the floor (``kind``) in a child process on the same flood."""
    args = {"kind": kind, "ws_url": sim.ws_url, "symbols": sc.symbols, "mongo_uri": uri}
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "bench.service_bench", json.dumps(args),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(SECONDS + WARM_S + 120):
        stdout, stderr = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{kind} consumer failed: {stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    if not result["klines"]:
        raise RuntimeError(f"{kind} consumer stored nothing in {SECONDS}s: {result}")
    result["us_per_kline"] = round(result["cpu_s"] / result["klines"] * 1e6, 1)
    return result


def _last_words(home: str, err: IO[bytes]) -> str:
    """cryptofeed's log file and its stderr, the tail of each."""
    err.seek(0)
    log = Path(home, "feedhandler.log")
    said = log.read_text()[-2000:] if log.exists() else ""
    return said + err.read()[-2000:].decode(errors="replace")


async def _cryptofeed(sc: Scenario, sim: SimProcess, uri: str, python: str) -> dict[str, Any]:
    """The collector issue 17 names (``bench/cryptofeed_child.py``, run by ``python``), measured
    as the daemon is: its process's ``utime + stime`` over the window, from 3 s after its first
    stored candle, and the candles its backend stored meanwhile."""
    from pymongo import AsyncMongoClient

    port = urllib.parse.urlsplit(uri).port
    child = ROOT / "bench" / "cryptofeed_child.py"
    symbols, timeframes = ",".join(_symbols(sc.symbols)), ",".join(TIMEFRAMES)
    # its own folder: cryptofeed writes feedhandler.log where it runs
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryFile() as err:
        proc = await asyncio.create_subprocess_exec(
            python, str(child), sim.ws_url, sim.rest_url, symbols, timeframes, str(port),
            cwd=home, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        candles = client["bench_cryptofeed"]["candles"]
        try:
            t_start = time.monotonic()
            while not await candles.estimated_document_count():
                if proc.returncode is not None or time.monotonic() - t_start > STARTUP_S:
                    raise RuntimeError(f"cryptofeed stored nothing: {_last_words(home, err)}")
                await asyncio.sleep(0.5)
            await asyncio.sleep(WARM_S)
            n0, cpu0 = await candles.count_documents({}), _cpu_s(proc.pid)
            await asyncio.sleep(SECONDS)
            cpu1, n1 = _cpu_s(proc.pid), await candles.count_documents({})
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            await client.close()
    return {
        "klines": n1 - n0,
        "cpu_s": round(cpu1 - cpu0, 2),
        "us_per_kline": round((cpu1 - cpu0) / max(n1 - n0, 1) * 1e6, 1),
    }


async def _scenario(sc: Scenario, work: Path) -> dict[str, Any]:
    from ingestor.embedded import EmbeddedMongo

    start = int(time.time()) // 3600 * 3_600_000
    listing = ["--start", str(start), "--history-start", str(start)] if sc.listing else []
    sim = await asyncio.to_thread(
        SimProcess, _symbols(sc.symbols), sc.speed, listing, weight_limit=10_000_000
    )
    try:
        out: dict[str, Any] = {
            "streams": sc.symbols * len(TIMEFRAMES),
            "timeframes": list(TIMEFRAMES),
            "sim_speed": sc.speed,
            "linger_ms": sc.linger_ms,
        }
        async with EmbeddedMongo(work / f"{sc.name}-db") as uri:
            out["daemon"] = await _daemon(sc, sim, uri, work)
        if sc.naive:
            async with EmbeddedMongo(work / f"{sc.name}-naive-db") as uri:
                out["naive"] = await _consumer("naive", sc, sim, uri)
            out["ratio"] = round(out["naive"]["us_per_kline"] / out["daemon"]["us_per_kline"], 2)
        if sc.floor:
            async with EmbeddedMongo(work / f"{sc.name}-floor-db") as uri:
                out["floor"] = await _consumer("floor", sc, sim, uri)
            naive, floor = out["naive"]["us_per_kline"], out["floor"]["us_per_kline"]
            out["ceiling_ratio"] = round(naive / floor, 2)
            out["daemon_over_floor_us"] = round(out["daemon"]["us_per_kline"] - floor, 1)
        cryptofeed = os.environ.get("BENCH_CRYPTOFEED_PYTHON")
        if sc.floor and cryptofeed:
            async with EmbeddedMongo(work / f"{sc.name}-cryptofeed-db") as uri:
                out["cryptofeed"] = await _cryptofeed(sc, sim, uri, cryptofeed)
            cf = out["cryptofeed"]["us_per_kline"]
            out["daemon_over_cryptofeed"] = round(out["daemon"]["us_per_kline"] / cf, 2)
        return out
    finally:
        sim.close()


def _null_sink() -> dict[str, Any] | str:
    """The real Service in-process with a null sink (``bench/service_inproc.py``, issue 16's
    ``run_inproc``), on the flood and on 2,400 streams, when that module is there."""
    if importlib.util.find_spec("bench.service_inproc") is None:
        return "null sink: not built"
    inproc = importlib.import_module("bench.service_inproc")
    return {
        streams: inproc.run_inproc(streams, SECONDS, "null")
        for streams in (f"{SCENARIOS[0].symbols}x{len(TIMEFRAMES)}", "2400")
    }


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {"cpu": os.cpu_count(), "seconds": SECONDS, "warm_s": WARM_S}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        for sc in SCENARIOS:
            figures[sc.name] = asyncio.run(_scenario(sc, Path(tmp)))
            print(sc.name, json.dumps(figures[sc.name]), flush=True)
    null = _null_sink()
    if isinstance(null, str):
        print(null)
    figures["null_sink"] = null
    flood = figures["flood"]
    print(
        f"CPU per stored kline: daemon {flood['daemon']['us_per_kline']} us, naive "
        f"{flood['naive']['us_per_kline']} us, ratio {flood['ratio']}x; floor "
        f"{flood['floor']['us_per_kline']} us (the best ratio this stack allows: "
        f"{flood['ceiling_ratio']}x); "
        f"2,400 streams: ratio {figures['streams_2400']['ratio']}x, peak RSS "
        f"{figures['streams_2400']['daemon']['peak_rss_mb']} MB; 48 streams: p99 close-to-commit "
        f"<= {figures['latency_48']['daemon']['commit_latency'].get('p99_le_s')} s"
    )
    return figures


def _consumer_child(arg: str) -> None:
    args = json.loads(arg)
    names = [f"{s.lower()}@kline_{tf}" for s in _symbols(args["symbols"]) for tf in TIMEFRAMES]
    if args["kind"] == "floor":
        import uvloop

        from bench.floor_consumer import FloorConsumer

        floor = FloorConsumer(args["ws_url"], names, mongo_uri=args["mongo_uri"])
        result = uvloop.run(floor.run(SECONDS, warmup=WARM_S))  # the daemon's loop
    else:
        from bench.naive_consumer import NaiveConsumer

        consumer = NaiveConsumer(args["ws_url"], names, mongo_uri=args["mongo_uri"])
        result = asyncio.run(consumer.run(SECONDS, warmup=WARM_S))  # the loop a user starts with
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _consumer_child(sys.argv[1])
    else:
        print(json.dumps(run(), indent=2))

"""Real-process harness: the simulator in this process (real sockets), `ingestor run` as a child
process with its own config, the database from the ``mongo_uri`` fixture."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from ingestor.simulator import Simulator
from ingestor.simulator.replay import load_replays, parse_replay_specs
from ingestor.store.documents import datetime_to_ms
from tests.conftest import REPO, TIMEOUT_FACTOR, data_dir, shared_data

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")


def real_replays() -> dict[Any, Any]:
    """Real Binance klines for some streams (the rest synthetic): an accelerated replay. The
    repository's 1m and 1h days always; BTCUSDT 15m and 1d too when ``../shared/data`` is there
    (synthetic otherwise)."""
    spot = data_dir() / "binance" / "spot"
    specs = [
        f"BTCUSDT:1m={spot / 'BTCUSDT-1m-2020-01-01.csv'}",
        f"BTCUSDT:1h={spot / 'BTCUSDT-1h-2024-08.csv'}",
        f"ETHUSDT:1m={spot / 'ETHUSDT-1m-2022-08-14.csv'}",
    ]
    shared = shared_data()
    if shared is not None:
        more = shared / "binance" / "spot"
        specs += [
            f"BTCUSDT:15m={more / 'BTCUSDT-15m-2020-01-01_2020-04-30.csv'}",
            f"BTCUSDT:1d={more / 'BTCUSDT-1d-2021-01-01_2021-09-23.csv'}",
        ]
    return load_replays(parse_replay_specs(specs))


def _toml(table: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    return "\n".join(f"{k} = {value(v)}" for k, v in table.items())


def write_config(
    path: Path,
    sim: Simulator,
    uri: str,
    db: str,
    data_dir: Path,
    *,
    exchange: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
    positions: dict[str, Any] | None = None,
    **ingest: Any,
) -> Path:
    """A daemon config for ``sim`` and the database; keyword sections override defaults."""
    sections: dict[str, dict[str, Any]] = {
        "exchange": {
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "time_scale": float(sim.config.speed),
            **(exchange or {}),
        },
        "mongodb": {"uri": uri, "database": db},
        "ingest": {
            "symbols": list(SYMBOLS),
            "timeframes": list(TIMEFRAMES),
            "linger_ms": 50,
            **ingest,
        },
        "health": {"port": 0, **(health or {})},
        "positions": dict(positions or {}),
        "service": {
            "data_dir": str(data_dir),
            "log_level": "INFO",
            "log_format": "text",
            **(service or {}),
        },
    }
    path.write_text("\n".join(f"[{name}]\n{_toml(t)}" for name, t in sections.items()) + "\n")
    return path


class Daemon:
    """`ingestor run` as a real child process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log.open("ab") as fh:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ingestor",
                "run",
                "--config",
                str(self.config),
                cwd=REPO,
                env=env,
                stdout=fh,
                stderr=fh,
            )

    async def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, within: float) -> int:
        assert self.proc is not None
        async with asyncio.timeout(within * TIMEOUT_FACTOR):
            return await self.proc.wait()

    async def kill(self) -> None:
        """Teardown: never leave a daemon behind a failed test, nor its process unreaped."""
        if self.proc is not None:
            if self.proc.returncode is None:
                self.proc.kill()
            await self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll ``check`` until true, failing with ``what`` after ``within`` seconds (scaled)."""
    deadline = time.monotonic() + within * TIMEOUT_FACTOR
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def client(uri: str) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(uri, tz_aware=True)


async def stored_docs(uri: str, db: str) -> list[dict[str, Any]]:
    mc = client(uri)
    try:
        return [d async for d in mc[db]["market_data"].find({}, {"_id": 0})]
    finally:
        await mc.close()


def assert_exact(
    sim: Simulator, docs: list[dict[str, Any]], stop_ms: int, streams: set[tuple[str, str]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every closed kline of every stream from its first stored one up to the stop, once each,
    with the exchange's values; nothing else. Returns the documents per stream, in time order."""
    from collections import Counter

    from bson import Decimal128

    by_stream: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in docs:
        by_stream.setdefault((d["symbol"], d["timeframe"]), []).append(d)
    assert set(by_stream) == streams
    for (sym, tf), rows in by_stream.items():
        rows.sort(key=lambda d: d["open_time"])
        times = [datetime_to_ms(d["open_time"]) for d in rows]
        dupes = [t for t, n in Counter(times).items() if n > 1]
        assert not dupes, f"{sym} {tf}: duplicated open times {dupes[:5]}"
        expected = sim.market.closed_klines(sym, tf, times[0], stop_ms)
        exp_times = [int(r[0]) for r in expected]
        missing = sorted(set(exp_times[: len(times)]) - set(times))
        assert not missing, f"{sym} {tf}: missing {missing[:5]}"
        assert times == exp_times[: len(times)], f"{sym} {tf}: stored klines that are not closed"
        assert len(times) >= len(exp_times) - 2, f"{sym} {tf}: lost closes before the stop"
        for d, r in zip(rows, expected, strict=False):
            assert datetime_to_ms(d["close_time"]) == int(r[6]) < stop_ms
            assert d["close_price"] == Decimal128(str(r[4])) and d["volume"] == Decimal128(
                str(r[5])
            )
            assert d["trades_count"] == int(r[8])
    return by_stream

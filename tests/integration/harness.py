"""Real-process harness: the simulator in this process (real sockets), `ingestor run` as a child
process with its own config, the database from the ``mongo_uri`` fixture."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from ingestor.simulator import Simulator
from ingestor.simulator.market import INTERVAL_MS, floor_to
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
    mongodb: dict[str, Any] | None = None,
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
        "mongodb": {"uri": uri, "database": db, **(mongodb or {})},
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


#: The daemon's log line naming its health endpoint (``ingestor.health``).
HEALTH_LINE = re.compile(r"health endpoint on (http://[0-9.]+:[0-9]+)")


class Daemon:
    """`ingestor run` as a real child process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self._log_from = 0  # where this run's lines begin in a log shared with earlier runs

    async def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
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

    async def stop(self, sim: Simulator, within: float = 10) -> int:
        """SIGTERM, exit 0; the sim time once it exited (an upper bound: every kline it stored
        closed before it; a time read before the signal is no such bound on a busy machine)."""
        await self.signal()
        assert await self.wait(within) == 0, self.output()[-3000:]
        return sim.clock.now_ms()

    async def kill(self) -> None:
        """Teardown: never leave a daemon behind a failed test, nor its process unreaped."""
        if self.proc is not None:
            if self.proc.returncode is None:
                self.proc.kill()
            await self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def health_base(self, within: float = 60) -> str:
        """``http://host:port`` of this run's health endpoint, as it logged it. With
        ``health.port = 0`` the daemon binds a free port itself: a port picked by the test and
        bound later can be taken by any other process meanwhile (seen under make stress)."""
        found: list[str] = []

        async def logged() -> bool:
            assert self.proc is not None and self.proc.returncode is None, self.output()[-3000:]
            with self.log.open("rb") as fh:
                fh.seek(self._log_from)
                text = fh.read().decode(errors="replace")
            found[:] = HEALTH_LINE.findall(text)[:1]
            return bool(found)

        await eventually(logged, within, "the daemon's health endpoint")
        return found[0]


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll ``check`` until true, failing with ``what`` after ``within`` seconds (scaled)."""
    deadline = time.monotonic() + within * TIMEOUT_FACTOR
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def settle(
    sim: Simulator, uri: str, db: str, streams: set[tuple[str, str]], within: float = 30
) -> int:
    """Sim time ``t`` once every stream has stored its last kline closed by ``t``: a lower
    bound for :func:`assert_exact` (everything closed by then is stored) that waits for the
    state instead of trusting the daemon to be as quick as the clock."""
    t = sim.clock.now_ms()
    need = {(sym, tf): floor_to(t, INTERVAL_MS[tf]) - INTERVAL_MS[tf] for sym, tf in streams}
    mc = client(uri)

    async def stored_through() -> bool:
        coll = mc[db]["market_data"]
        for (sym, tf), open_ms in need.items():
            doc = await coll.find_one({"symbol": sym, "timeframe": tf}, sort=[("open_time", -1)])
            if doc is None or datetime_to_ms(doc["open_time"]) < open_ms:
                return False
        return True

    try:
        await eventually(stored_through, within, "every stream stored through the settle time")
    finally:
        await mc.close()
    return t


def client(uri: str) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(uri, tz_aware=True)


async def stored_docs(uri: str, db: str) -> list[dict[str, Any]]:
    mc = client(uri)
    try:
        return [d async for d in mc[db]["market_data"].find({}, {"_id": 0})]
    finally:
        await mc.close()


def assert_exact(
    sim: Simulator,
    docs: list[dict[str, Any]],
    through_ms: int,
    stop_ms: int,
    streams: set[tuple[str, str]],
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every kline of every stream from its first stored one on, once each, with the exchange's
    values: all that closed by ``through_ms`` (see :func:`settle`), none that had not closed by
    ``stop_ms`` (see :meth:`Daemon.stop`), no gap. Returns the documents per stream, in order."""
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
        expected = sim.market.closed_klines(sym, tf, times[0], stop_ms, now_ms=stop_ms)
        exp_times = [int(r[0]) for r in expected]
        missing = sorted(set(exp_times[: len(times)]) - set(times))
        assert not missing, f"{sym} {tf}: missing {missing[:5]}"
        assert times == exp_times[: len(times)], f"{sym} {tf}: stored klines that are not closed"
        due = sim.market.closed_klines(sym, tf, times[0], through_ms, now_ms=through_ms)
        assert len(times) >= len(due), f"{sym} {tf}: lost closes before {through_ms}"
        for d, r in zip(rows, expected, strict=False):
            assert datetime_to_ms(d["close_time"]) == int(r[6]) < stop_ms
            assert d["close_price"] == Decimal128(str(r[4])) and d["volume"] == Decimal128(
                str(r[5])
            )
            assert d["trades_count"] == int(r[8])
    return by_stream


def talib_outputs(close: Any) -> dict[str, Any]:
    """TA-Lib's values of the eight stored indicators over ``close``."""
    import talib

    macd, signal, _ = talib.MACD(close, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0)  # matype SMA, the default
    return {
        "rsi_14": talib.RSI(close, 14),
        "macd": macd,
        "macd_signal": signal,
        "bollinger_upper": upper,
        "bollinger_middle": middle,
        "bollinger_lower": lower,
        "ema_20": talib.EMA(close, 20),
        "sma_50": talib.SMA(close, 50),
    }


def assert_whole_history_indicators(
    sim: Simulator, sym: str, tf: str, rows: list[dict[str, Any]], history_from: int | None = None
) -> None:
    """Every stored candle's eight indicators equal TA-Lib over the stream's whole history on
    the exchange: from its first kline, or (a synthetic market with no start) from
    ``history_from`` klines before the first stored one, where TA-Lib's values equal those of
    the whole history far below the tolerance (tests/indicators/test_indicators_outputs.py).
    1e-9 of the price (RSI: 1e-9 absolute); null exactly where TA-Lib has no value."""
    import math

    import numpy as np
    from bson import Decimal128

    from ingestor.streams import TIMEFRAME_MS

    iv = TIMEFRAME_MS[tf]
    times = [datetime_to_ms(d["open_time"]) for d in rows]
    start = sim.market.first_open(tf)
    if history_from is not None:
        start = max(start, times[0] - history_from * iv)
    series = sim.market.closed_klines(sym, tf, start, times[-1])
    at = {int(r[0]): i for i, r in enumerate(series)}
    close = np.array([float(r[4]) for r in series])
    ref = talib_outputs(close)
    for d, t in zip(rows, times, strict=True):
        i = at[t]
        for name, values in ref.items():
            v = d["indicators"][name]
            got = float(v.to_decimal()) if isinstance(v, Decimal128) else v
            want = float(values[i])
            where = (sym, tf, t, name, got, want)
            if math.isnan(want):
                assert got is None, where
                continue
            scale = 1.0 if name == "rsi_14" else max(1.0, abs(close[i]))
            assert got is not None and abs(got - want) <= 1e-9 * scale, where

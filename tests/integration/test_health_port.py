"""The health port cannot starve the daemon: 400 idle and trickling connections against
`ingestor run` limited to 256 descriptors, while it keeps storing every kline exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingestor.simulator import SimConfig, Simulator
from tests.conftest import REPO, TIMEOUT_FACTOR
from tests.integration.harness import (
    HEALTH_LINE,
    assert_exact,
    client,
    eventually,
    settle,
    stored_docs,
    write_config,
)

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

SYMBOLS = ("BTCUSDT", "ETHUSDT")
NOFILE = 256


def _low_nofile() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


async def _status(url: str) -> int:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def test_400_idle_connections_do_not_starve_a_daemon_with_256_descriptors(
    tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    async with Simulator(SimConfig(symbols=SYMBOLS, speed=60.0)) as sim:
        conf = write_config(
            tmp_path / "config.toml",
            sim,
            mongo_uri,
            db_name,
            tmp_path / "data",
            health={"port": 0},  # the daemon binds a free port itself (no race for it)
            symbols=list(SYMBOLS),
            timeframes=["1m"],
            warmup_candles=100,
            final_grace_ms=500,
        )
        log = tmp_path / "d.log"
        with log.open("ab") as fh:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ingestor", "run", "--config", str(conf),
                cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                stdout=fh, stderr=fh, preexec_fn=_low_nofile,
            )  # fmt: skip
        held: list[asyncio.StreamWriter] = []
        mc = client(mongo_uri)
        try:
            found: list[str] = []

            async def logged() -> bool:
                assert proc.returncode is None, log.read_text()[-3000:]
                found[:] = HEALTH_LINE.findall(log.read_text(errors="replace"))[:1]
                return bool(found)

            await eventually(logged, 60, "the daemon's health endpoint")
            base = found[0]
            port = int(base.rpartition(":")[2])

            async def ready() -> bool:
                assert proc.returncode is None, log.read_text()[-3000:]
                return await _status(f"{base}/readyz") == 200

            await eventually(ready, 60, "the daemon ready")
            stored = mc[db_name]["market_data"]
            before = await stored.count_documents({})

            async def connect() -> None:
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(5 * TIMEOUT_FACTOR):
                        _, w = await asyncio.open_connection("127.0.0.1", port)
                    held.append(w)

            await asyncio.gather(*(connect() for _ in range(400)))
            assert len(held) >= 300, len(held)
            for w in held[:100]:  # a quarter trickle a request head, never finishing it
                w.write(b"GET /status HTTP/1.1\r\n")

            # Held for three header timeouts: the daemon keeps storing what closes meanwhile.
            async def storing() -> bool:
                assert proc.returncode is None, log.read_text()[-3000:]
                for w in held[:100]:
                    with contextlib.suppress(OSError):
                        w.write(b"X")
                return await stored.count_documents({}) >= before + 3 * len(SYMBOLS)

            await eventually(storing, 60, "klines stored while the connections are held")
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            assert fds < NOFILE - 64, fds

            async def answers() -> bool:  # the idle ones timed out: the port serves again
                assert proc.returncode is None, log.read_text()[-3000:]
                return await _status(f"{base}/healthz") == 200

            await eventually(answers, 60, "/healthz answering with the connections held")
            through_ms = await settle(sim, mongo_uri, db_name, {(s, "1m") for s in SYMBOLS})
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15 * TIMEOUT_FACTOR):
                assert await proc.wait() == 0, log.read_text()[-3000:]
            stop_ms = sim.clock.now_ms()  # nothing closed after this can be stored
        finally:
            for w in held:
                w.transport.abort()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await mc.close()
    out = log.read_text()
    assert "Too many open files" not in out and "Traceback" not in out, out[-3000:]
    docs: list[dict[str, Any]] = await stored_docs(mongo_uri, db_name)
    assert_exact(sim, docs, through_ms, stop_ms, {(s, "1m") for s in SYMBOLS})

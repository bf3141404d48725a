"""`ingestor status` against a real health server (aiohttp on a free port) in this process.

The command's ``run`` is synchronous (urllib), so it runs in a thread while the server answers
on the event loop. The same against a real daemon: tests/integration/test_observability.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from ingestor import status
from ingestor.candles import INDICATOR_FIELDS
from ingestor.health import HealthServer
from ingestor.probe import ConnectionStatus, HealthProbe, StreamStatus
from tests.conftest import REPO, TIMEOUT_FACTOR, _free_port

M = 60_000
NOW = 1_700_000_000_000 // M * M + 30_000


class World:
    """What the daemon reports; tests flip it between calls."""

    def __init__(self) -> None:
        self.db = True
        self.connected = True
        self.last = {"BTCUSDT:1m": NOW // M * M - M, "ETHUSDT:1m": NOW // M * M - M}

    async def db_ok(self) -> bool:
        return self.db

    def probe(self) -> HealthProbe:
        candle = {
            "open_time_ms": NOW // M * M - M,
            "open_time": "2023-11-14T22:12:00.000+00:00",
            "close": "37012.55",
            "indicators": {n: 1.25 + i for i, n in enumerate(INDICATOR_FIELDS)} | {"sma_50": None},
        }
        return HealthProbe(
            db_ok=self.db_ok,
            connections=lambda: [ConnectionStatus(0, self.connected, 0.5, 3)],
            streams=lambda: [StreamStatus(s, M, t, 0) for s, t in self.last.items()],
            catching_up=lambda: False,
            now_ms=lambda: NOW,
            grace_ms=5_000,
            version="9.9.9",
            rejects=lambda: {"bad_decimal": 3, "duplicate": 1},
            candles=lambda: {"BTCUSDT:1m": candle},
        )


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def base(world: World) -> AsyncIterator[str]:
    async with HealthServer("127.0.0.1", 0, world.probe(), db_timeout_s=0.3) as hs:
        yield f"http://127.0.0.1:{hs.port}"


async def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    status.add_arguments(parser)
    code = await asyncio.to_thread(status.run, parser.parse_args(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


async def test_ready_daemon_table_and_exit_0(base: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await _run(capsys, "--url", base)
    assert code == status.EXIT_READY
    assert "9.9.9" in out and "READY" in out and "why:" not in out
    assert "BTCUSDT:1m" in out and "ETHUSDT:1m" in out
    # BTC's newest candle: open time, close, the indicators (sma_50 still null: "-").
    assert "2023-11-14 22:12:00 " in out and "37012.55" in out
    assert "1.25" in out and "7.25" in out  # rsi_14 .. ema_20
    assert "rejects: 4 (bad_decimal 3, duplicate 1)" in out
    assert "3" in out.split("connections")[1]  # reconnects of connection 0


async def test_json_passes_the_document_through(
    base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await _run(capsys, "--url", base + "/status", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["ready"] is True and doc["rejects"] == {"bad_decimal": 3, "duplicate": 1}
    streams = {s["stream"]: s for s in doc["streams"]}
    assert streams["BTCUSDT:1m"]["candle"]["close"] == "37012.55"
    assert streams["ETHUSDT:1m"]["candle"] is None
    assert doc["checks"]["database"] == {"ok": True}


async def test_not_ready_exits_1_and_says_why(
    base: str, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.db, world.connected = False, False
    world.last["ETHUSDT:1m"] = NOW // M * M - 10 * M
    code, out, _ = await _run(capsys, "--url", base)
    assert code == status.EXIT_NOT_READY
    assert "DEGRADED" in out
    assert "why: database: not answering" in out
    assert "why: feed: 1 of 1 connections, down: [0]" in out
    assert "why: streams: 1 lag beyond 5.0 s: ETHUSDT:1m" in out
    assert "DOWN" in out
    code, out, _ = await _run(capsys, "--url", base, "--json")
    assert code == 1 and json.loads(out)["failed"] == ["database", "feed", "streams"]


def test_reasons_show_what_else_a_check_carries() -> None:
    doc: dict[str, Any] = {
        "failed": ["database", "catching_up"],
        "checks": {"database": {"ok": False, "reason": "Unauthorized"}, "catching_up": {}},
    }
    assert status.reasons(doc) == [
        "database: not answering (or the last write failed) (reason: Unauthorized)",
        "catching_up: still filling streams from REST after the start",
    ]


async def test_nothing_listening_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    code, out, err = await _run(capsys, "--url", url, "--timeout", "2")
    assert code == status.EXIT_UNREACHABLE and out == ""
    assert f"cannot reach {url}/status" in err


@pytest.mark.parametrize(
    ("path_answer", "message"),
    [
        (web.Response(text="hello"), "did not answer JSON"),
        (web.json_response({"status": "alive"}), "did not answer an ingestor /status document"),
        (web.json_response([1, 2]), "did not answer an ingestor /status document"),
        (None, "answered HTTP 404"),
    ],
)
async def test_something_else_answering_exits_2(
    path_answer: web.Response | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = web.Application()
    if path_answer is not None:

        async def handler(request: web.Request) -> web.Response:
            return path_answer

        app.router.add_get("/status", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        code, _, err = await _run(capsys, "--url", f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
    assert code == 2 and message in err


async def test_not_an_http_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await _run(capsys, "--url", "file:///etc/passwd")
    assert code == 2 and "not an http(s) URL" in err


class _Counting(World):
    """Counts the daemon's readiness evaluations: one per /status request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def db_ok(self) -> bool:
        self.requests += 1
        return self.db


async def _child(url: str, *argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingestor",
        "status",
        "--url",
        url,
        "--interval",
        "0.1",
        *argv,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _until_requests(world: _Counting, n: int, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30 * TIMEOUT_FACTOR
    while world.requests < n:
        assert proc.returncode is None and time.monotonic() < deadline, "no more requests"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("as_json", [False, True])
async def test_watch_follows_the_daemon_until_interrupted(as_json: bool) -> None:
    """--watch keeps asking; Ctrl-C ends it with the exit code of the last look."""
    world = _Counting()
    async with HealthServer("127.0.0.1", 0, world.probe(), db_timeout_s=0.3) as hs:
        proc = await _child(f"http://127.0.0.1:{hs.port}", "--watch", *(["--json"] * as_json))
        try:
            await _until_requests(world, 2, proc)
            world.db = False
            # A request that starts after the change, and the next (so the first was shown).
            seen = world.requests
            await _until_requests(world, seen + 2, proc)
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(30 * TIMEOUT_FACTOR):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == status.EXIT_NOT_READY, err.decode()
    text = out.decode()
    if as_json:
        docs = [json.loads(line) for line in text.splitlines()]
        assert len(docs) >= 3 and docs[0]["ready"] is True and docs[-1]["ready"] is False
    else:
        assert "DEGRADED" in text and "why: database" in text

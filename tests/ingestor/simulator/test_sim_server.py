"""The simulated exchange over real sockets: websocket streams, REST, limits, faults, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from ingestor.simulator import SimConfig, Simulator
from ingestor.simulator.replay import load_csv_rows
from ingestor.streams import StreamKey
from tests.conftest import data_dir

REPO = Path(__file__).resolve().parents[3]
DATA = data_dir() / "binance"
FRAMES = DATA / "ws" / "recorded_kline_frames.jsonl"
FIXTURES = DATA / "fixtures"
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
WAIT = 5.0 * float(os.environ.get("TIMEOUT_FACTOR", "1"))


def frozen() -> float:
    """A time source that never moves: the sim clock stays at its start (no load can age it)."""
    return 0.0


def fast(**kw: Any) -> SimConfig:
    """60x speed (a 1m candle closes every real second), quick updates."""
    base: dict[str, Any] = {"start_ms": T0 + 58_000, "speed": 60.0, "update_interval_s": 0.05}
    base.update(kw)
    return SimConfig(**base)


async def recv_json(ws: Any, within: float = WAIT) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), within))


async def recv_until(ws: Any, pred: Callable[[Any], bool], within: float = WAIT) -> Any:
    """Next JSON frame satisfying ``pred`` (non-JSON frames are skipped)."""
    async with asyncio.timeout(within):
        while True:
            raw = await ws.recv()
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if pred(msg):
                return msg


async def eventually(pred: Callable[[], bool], within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def is_final(msg: Any) -> bool:
    return isinstance(msg, dict) and msg.get("data", msg).get("k", {}).get("x") is True


async def get(session: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any, Any]:
    async with session.get(url, params={k: str(v) for k, v in params.items()}) as r:
        return r.status, await r.json(content_type=None), r.headers


def event_as_row(k: dict[str, Any]) -> list[Any]:
    return [k[x] for x in ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q", "B")]


def shape(value: Any) -> Any:
    """Keys (in order) and value types of a JSON object, recursively."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    return type(value).__name__


async def test_kline_frames_have_the_shape_of_recorded_binance_spot_frames() -> None:
    recorded = [json.loads(line) for line in FRAMES.read_text().splitlines()]
    spot = [json.loads(r["frame"]) for r in recorded if r["market"] == "spot"]
    assert spot
    async with (
        Simulator(fast()) as sim,
        websockets.connect(f"{sim.ws_url}/stream?streams=btcusdt@kline_1m") as ws,
    ):
        update = await recv_until(ws, lambda m: "data" in m)
        final = await recv_until(ws, is_final)
    for real in spot:
        assert shape(update) == shape(real)
        assert shape(final) == shape(real)
    assert update["stream"] == "btcusdt@kline_1m" and update["data"]["s"] == "BTCUSDT"
    assert re.fullmatch(r"\d+\.\d{8}", update["data"]["k"]["o"])


async def test_raw_stream_and_subscribe_unsubscribe_list() -> None:
    async with (
        Simulator(fast()) as sim,
        websockets.connect(f"{sim.ws_url}/ws/ethusdt@kline_1m") as ws,
    ):
        bare = await recv_until(ws, lambda m: m.get("e") == "kline")
        assert bare["s"] == "ETHUSDT" and "stream" not in bare
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["solusdt@kline_5m"], "id": 1}))
        assert await recv_until(ws, lambda m: "id" in m) == {"result": None, "id": 1}
        await recv_until(ws, lambda m: m.get("s") == "SOLUSDT" and m["k"]["i"] == "5m")
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        listed = await recv_until(ws, lambda m: "id" in m)
        assert listed == {"result": ["ethusdt@kline_1m", "solusdt@kline_5m"], "id": 2}
        await ws.send(
            json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 3})
        )
        assert await recv_until(ws, lambda m: "id" in m) == {"result": None, "id": 3}
        await ws.send("not json")
        err = await recv_until(ws, lambda m: "error" in m)
        assert err["error"]["code"] == 3
        # after the unsubscribe reply only SOL frames arrive
        for _ in range(5):
            assert (await recv_until(ws, lambda m: m.get("e") == "kline"))["s"] == "SOLUSDT"


async def test_rest_klines_semantics_and_weight_header() -> None:
    # frozen at T0 + 58 s: the forming kline is T0's however long the requests take
    cfg = fast(speed=1.0, time_source=frozen)
    async with Simulator(cfg) as sim, aiohttp.ClientSession(sim.rest_url) as s:
        status, rows, headers = await get(s, "/api/v3/klines", symbol="BTCUSDT", interval="1m")
        assert status == 200 and len(rows) == 500
        assert headers["X-MBX-USED-WEIGHT-1M"] == "2"
        now = sim.clock.now_ms()
        last = rows[-1]
        assert last[0] == T0 and last[6] > now  # the forming kline comes last
        assert last[1] == sim.market.kline("BTCUSDT", "1m", T0)[1]
        assert rows[:-1] == sim.market.closed_klines("BTCUSDT", "1m", rows[0][0], T0 - 60_000)
        assert [r[0] for r in rows] == list(range(T0 - 499 * 60_000, T0 + 1, 60_000))

        _, rows, headers = await get(
            s, "/api/v3/klines", symbol="BTCUSDT", interval="1m", limit=5000
        )
        assert len(rows) == 1000 and headers["X-MBX-USED-WEIGHT-1M"] == "4"

        start = T0 - 10 * 86_400_000 + 1  # not aligned: first open at or after it
        _, rows, _ = await get(
            s, "/api/v3/klines", symbol="ETHUSDT", interval="1h", startTime=start, limit=3
        )
        assert [r[0] for r in rows] == [T0 - 10 * 86_400_000 + i * 3_600_000 for i in (1, 2, 3)]
        _, rows, _ = await get(
            s,
            "/api/v3/klines",
            symbol="ETHUSDT",
            interval="1h",
            startTime=T0 - 5 * 3_600_000,
            endTime=T0 - 3 * 3_600_000,
        )
        assert [r[0] for r in rows] == [T0 - h * 3_600_000 for h in (5, 4, 3)]
        _, rows, _ = await get(
            s, "/api/v3/klines", symbol="ETHUSDT", interval="1h", endTime=T0 - 3_600_000, limit=2
        )
        assert [r[0] for r in rows] == [T0 - 2 * 3_600_000, T0 - 3_600_000]
        _, rows, _ = await get(
            s, "/api/v3/klines", symbol="ETHUSDT", interval="1h", startTime=T0 + 86_400_000
        )
        assert rows == []
        # 90+ days of history are there
        _, rows, _ = await get(
            s, "/api/v3/klines", symbol="DOGEUSDT", interval="1d", startTime=T0 - 100 * 86_400_000
        )
        assert len(rows) == 101

        status, body, _ = await get(s, "/api/v3/klines", symbol="NOPEUSDT", interval="1m")
        assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
        status, body, _ = await get(s, "/api/v3/klines", symbol="BTCUSDT", interval="7m")
        assert (status, body["code"]) == (400, -1120)
        status, body, _ = await get(
            s, "/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=T0, endTime=T0 - 1
        )
        assert (status, body["code"]) == (400, -1023)


async def test_ping_time_and_exchange_info() -> None:
    fixture = json.loads((FIXTURES / "http_spot_market_exchange_info.json").read_text())
    async with Simulator(fast(speed=1.0)) as sim, aiohttp.ClientSession(sim.rest_url) as s:
        assert (await get(s, "/api/v3/ping"))[:2] == (200, {})
        before = sim.clock.now_ms()
        _, body, _ = await get(s, "/api/v3/time")
        assert before <= body["serverTime"] <= sim.clock.now_ms() and body["serverTime"] >= T0
        _, info, headers = await get(s, "/api/v3/exchangeInfo")
        assert headers["X-MBX-USED-WEIGHT-1M"] == "22"  # ping 1 + time 1 + 20
        assert list(info) == list(fixture)
        assert [x["symbol"] for x in info["symbols"]] == list(sim.config.symbols)
        real_btc = next(x for x in fixture["symbols"] if x["symbol"] == "BTCUSDT")
        sim_btc = info["symbols"][0]
        assert shape(sim_btc) == shape(real_btc)
        assert [f["filterType"] for f in sim_btc["filters"]] == [
            f["filterType"] for f in real_btc["filters"]
        ]
        assert sim_btc["filters"][0]["tickSize"] == "0.01000000" and sim_btc["status"] == "TRADING"
        _, info, _ = await get(s, "/api/v3/exchangeInfo", symbols='["ETHUSDT","XRPUSDT"]')
        assert [x["symbol"] for x in info["symbols"]] == ["ETHUSDT", "XRPUSDT"]
        assert [x["baseAsset"] for x in info["symbols"]] == ["ETH", "XRP"]
        status, body, _ = await get(s, "/api/v3/exchangeInfo", symbol="FOOBAR")
        assert (status, body["code"]) == (400, -1121)


async def test_websocket_finals_equal_rest_rows() -> None:
    async with (
        Simulator(fast()) as sim,
        websockets.connect(f"{sim.ws_url}/stream?streams=btcusdt@kline_1m/avaxusdt@kline_1m") as ws,
        aiohttp.ClientSession(sim.rest_url) as s,
    ):
        finals = [await recv_until(ws, is_final) for _ in range(4)]
        assert {f["stream"] for f in finals} == {"btcusdt@kline_1m", "avaxusdt@kline_1m"}
        for f in finals:
            k = f["data"]["k"]
            assert f["data"]["E"] > k["T"]
            _, rows, _ = await get(
                s, "/api/v3/klines", symbol=k["s"], interval="1m", startTime=k["t"], limit=1
            )
            assert rows == [event_as_row(k)]
            assert rows[0] == sim.market.kline(k["s"], "1m", k["t"])


async def test_two_simulators_with_the_same_seed_agree() -> None:
    cfg: dict[str, Any] = {"seed": 42, "start_ms": T0, "speed": 1.0}
    async with (
        Simulator(SimConfig(**cfg)) as a,
        Simulator(SimConfig(**cfg)) as b,
        Simulator(SimConfig(**{**cfg, "seed": 43})) as c,
        aiohttp.ClientSession() as s,
    ):
        q = {"symbol": "BNBUSDT", "interval": "15m", "startTime": T0 - 86_400_000, "limit": 96}
        ra = (await get(s, f"{a.rest_url}/api/v3/klines", **q))[1]
        rb = (await get(s, f"{b.rest_url}/api/v3/klines", **q))[1]
        rc = (await get(s, f"{c.rest_url}/api/v3/klines", **q))[1]
        assert ra == rb and len(ra) == 96 and ra != rc


async def test_replayed_csv_serves_the_exact_csv_strings() -> None:
    path = DATA / "spot" / "BTCUSDT-1m-2020-01-01.csv"
    rows = load_csv_rows([path])
    raw = [line.split(",") for line in path.read_text().splitlines()]
    cfg = fast(start_ms=T0, replays={StreamKey("BTCUSDT", "1m"): rows})
    async with (
        Simulator(cfg) as sim,
        aiohttp.ClientSession(sim.rest_url) as s,
        websockets.connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws,
    ):
        _, got, _ = await get(
            s,
            "/api/v3/klines",
            symbol="BTCUSDT",
            interval="1m",
            startTime=T0 - 1440 * 60_000,
            limit=1000,
        )
        for g, r in zip(got, raw, strict=False):
            assert g[1:6] == r[1:6] and g[7] == r[7] and g[8] == int(r[8]) and g[9:] == r[9:]
        final = await recv_until(ws, lambda m: m.get("k", {}).get("x") is True)
        k = final["k"]
        src = raw[((k["t"] - T0) // 60_000) % 1440]  # the file cycles from the sim start
        assert [k["o"], k["h"], k["l"], k["c"], k["v"]] == src[1:6]


async def test_dropped_finals_are_missing_on_ws_but_present_on_rest() -> None:
    cfg = fast()
    cfg.faults.drop_final_p = 1.0
    async with Simulator(cfg) as sim, websockets.connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws:
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT):
            while sim.stats.finals_dropped < 2:
                seen.append(json.loads(await ws.recv()))
        assert not any(m["k"]["x"] for m in seen)
        assert sim.stats.finals_sent == 0
        now = sim.clock.now_ms()
        closed = sim.market.closed_klines("BTCUSDT", "1m", T0, now, now_ms=now)
        assert closed  # the dropped klines are still served (REST/backfill sees them)


async def test_repeated_finals_arrive_twice() -> None:
    cfg = fast()
    cfg.faults.repeat_final_p = 1.0
    async with Simulator(cfg) as sim, websockets.connect(f"{sim.ws_url}/ws/xrpusdt@kline_1m") as ws:
        first = await recv_until(ws, lambda m: m["k"]["x"])
        second = await recv_json(ws)
        assert second == first
        assert sim.stats.finals_repeated >= 1


async def test_garbage_frames_are_malformed() -> None:
    cfg = fast()
    cfg.faults.garbage_p = 1.0
    async with Simulator(cfg) as sim, websockets.connect(f"{sim.ws_url}/ws/adausdt@kline_1m") as ws:
        kinds: set[str] = set()
        async with asyncio.timeout(WAIT):
            while len(kinds) < 4:
                raw = await ws.recv()
                try:
                    msg = json.loads(raw)
                except ValueError:
                    kinds.add("not_json")
                    continue
                k = msg["k"]
                if set(k) != set("tTsifLochlvnxqVQB"):
                    kinds.add("missing_field")
                elif not (
                    isinstance(k["t"], int)
                    and isinstance(k["x"], bool)
                    and isinstance(k["n"], int)
                    and isinstance(k["c"], str)
                ):
                    kinds.add("wrong_type")
                elif float(k["h"]) < float(k["l"]):
                    kinds.add("high_below_low")
        assert sim.stats.garbage_sent >= 4


async def test_disconnect_fault_set_at_runtime_over_http() -> None:
    async with Simulator(fast()) as sim, aiohttp.ClientSession(sim.rest_url) as s:
        async with websockets.connect(f"{sim.ws_url}/ws/btcusdt@kline_1m") as ws:
            await recv_json(ws)
            async with s.post("/_sim/faults", json={"disconnect_every_s": 0.1}) as r:
                assert r.status == 200
                assert (await r.json())["disconnect_every_s"] == 0.1
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(WAIT):
                    while True:
                        await ws.recv()
        assert sim.stats.fault_disconnects >= 1
        async with s.post("/_sim/faults", json={"drop_final_p": 2}) as r:
            assert r.status == 400
        async with s.post("/_sim/faults", json={"nope": 1}) as r:
            assert r.status == 400
        _, stats, _ = await get(s, "/_sim/stats")
        assert stats["fault_disconnects"] >= 1 and stats["connections_total"] == 1


async def test_weight_limit_429_with_retry_after_then_418_ban() -> None:
    async with (
        Simulator(fast(weight_limit_1m=6, ban_after_violations=2)) as sim,
        aiohttp.ClientSession(sim.rest_url) as s,
    ):
        q = {"symbol": "BTCUSDT", "interval": "1m", "limit": 1}
        for used in ("2", "4", "6"):
            status, _, headers = await get(s, "/api/v3/klines", **q)
            assert (status, headers["X-MBX-USED-WEIGHT-1M"]) == (200, used)
        status, body, headers = await get(s, "/api/v3/klines", **q)
        assert status == 429 and body["code"] == -1003
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert (await get(s, "/api/v3/ping"))[0] == 429  # still inside Retry-After: violation 1
        status, body, headers = await get(s, "/api/v3/ping")  # violation 2: banned
        assert status == 418 and "banned" in body["msg"] and int(headers["Retry-After"]) >= 60
        assert (await get(s, "/api/v3/time"))[0] == 418
        assert sim.stats.rest_429s == 2 and sim.stats.rest_418s == 2


async def test_forced_429_fault_and_rest_delay() -> None:
    cfg = fast()
    cfg.faults.rest_429_p = 1.0
    cfg.faults.rest_429_retry_after_s = 3
    async with Simulator(cfg) as sim, aiohttp.ClientSession(sim.rest_url) as s:
        status, _, headers = await get(s, "/api/v3/ping")
        assert (status, headers["Retry-After"]) == (429, "3")
        sim._retry_until = 0.0  # as if the client had waited the Retry-After out
        sim.set_faults(rest_429_p=0.0, rest_delay_s=0.2)
        t = time.monotonic()
        assert (await get(s, "/api/v3/ping"))[0] == 200
        assert time.monotonic() - t >= 0.2


async def test_incoming_message_rate_limit_disconnects() -> None:
    # a frozen time source: all six messages arrive "within 1 s" however slow the machine is
    cfg = fast(time_source=frozen)
    async with Simulator(cfg) as sim, websockets.connect(f"{sim.ws_url}/ws") as ws:
        for i in range(5):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        for _ in range(5):
            await recv_until(ws, lambda m: "id" in m)
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 99}))  # 6th within 1 s
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(WAIT):
                while True:
                    await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert sim.stats.rate_limit_disconnects == 1


async def test_stream_count_limit() -> None:
    names = [f"btcusdt@kline_{i}m" for i in range(1025)]  # unknown intervals still count
    async with Simulator(fast()) as sim:
        async with websockets.connect(f"{sim.ws_url}/stream?streams=" + "/".join(names)) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), WAIT)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        async with websockets.connect(
            f"{sim.ws_url}/stream?streams=" + "/".join(names[:1024])
        ) as ws:
            await ws.send(
                json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 7})
            )
            err = await recv_until(ws, lambda m: "id" in m)
            assert err["id"] == 7 and err["error"]["code"] == 2
        assert sim.stats.stream_limit_rejections == 2


async def test_connection_is_closed_after_24h_of_sim_time_with_server_shutdown() -> None:
    cfg = fast(speed=86_400 * 4.0, connection_lifetime_sim_ms=86_400_000)  # 24 h = 0.25 s real
    async with Simulator(cfg) as sim, websockets.connect(f"{sim.ws_url}/stream?streams=") as ws:
        shutdown = await recv_until(ws, lambda m: "event" in m)
        assert shutdown["event"]["e"] == "serverShutdown"
        # from the server's own open time: a clock read after connect is already late
        opened = sim.stats.last_connection_opened_ms
        assert opened >= T0 + 58_000 and sim.stats.connections_total == 1
        assert shutdown["event"]["E"] - opened >= 86_400_000
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), WAIT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert sim.stats.lifetime_disconnects == 1


async def test_server_shutdown_event_on_stop_and_pings() -> None:
    sim = Simulator(fast(ping_interval_s=0.05))
    await sim.start()
    try:
        ws = await websockets.connect(f"{sim.ws_url}/ws/btcusdt@kline_1h")
        await eventually(lambda: sim.stats.pings_sent >= 2)
        assert ws.state.name == "OPEN"  # the client library answered the pings
    finally:
        await sim.stop()
    shutdown = await recv_until(ws, lambda m: "event" in m)
    assert shutdown == {"event": {"e": "serverShutdown", "E": shutdown["event"]["E"]}}
    await ws.close()


def test_cli_runs_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "simulate", "--port", "0", "--speed", "10"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        import urllib.request

        with urllib.request.urlopen(f"{url}/api/v3/ping", timeout=WAIT) as r:
            assert r.status == 200 and r.read() == b"{}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

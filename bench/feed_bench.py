"""CPU per frame of the feed's websocket client: ``websockets`` (the daemon's) vs ``picows``.

A server in its own process sends every connection the same byte stream: real-shaped
combined-stream kline frames (``{"stream": ..., "data": {"e": "kline", ...}}``) made by the
simulator's market model and framed once up front, then a close frame (1000).  Two modes:

* ``flood``: the frames written in 1 MiB chunks, so the server costs almost nothing and every
  client reads many frames per wake-up at a rate it cannot outrun (the bulk cost per frame);
* ``paced``: one frame per write per connection every millisecond, so a client mostly wakes up
  for one frame, as it does on the live feed (~1,200 frames/s at 2,400 streams), where the
  cost of each wake-up counts too.
  Each client variant runs in a fresh process on uvloop (the daemon's loop); the
figure is the client process's CPU time (``time.process_time``: every thread) from the moment it
asks for the flood until every connection has closed, divided by the frames it received.  Each
variant is measured ``RUNS`` times, in rotating order, and the median is reported.

Variants (all hand each frame's payload to a sink that counts it and its bytes):

* ``websockets``: the daemon's read loop today (``recv()`` -> ``str`` under an
  ``asyncio.timeout`` per frame for its silence check), with the daemon's connect options;
* ``websockets_bytes``: the same loop with ``recv(decode=False)`` (no UTF-8 decode: the decoder
  takes ``bytes``);
* ``websockets_iter``: plain ``async for`` over the connection, ``str`` frames (no timeout);
* ``picows``: a Cython client; each frame arrives in a ``WSListener.on_ws_frame`` callback and
  its payload is copied out as ``bytes`` (what the decoder would get).

For scale, the median cost of ``orjson.loads`` of the same frames (the decoder's first step) is
measured in this process.

``daemon``: the real daemon (``ingestor run``, uvloop) end to end with each ``exchange.ws_client``
on the simulator (its own process, real-time clock) at 480 streams (240 symbols x 1m, 5m; an
update per stream every 0.2 s: ~2,400 frames/s in bursts, twice the live feed's rate at 2,400
streams) into the embedded database: the daemon process's CPU (``/proc/<pid>/stat``; its
children, the database, not counted) per frame received (its ``ingestor_frames_received``
counter) over ``DAEMON_SECONDS``, from ``DAEMON_SETTLE_S`` after its first frame; ``RUNS`` runs
per client, alternating, medians.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import multiprocessing
import statistics
import time
from contextlib import suppress
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any

import orjson

__all__ = ["run"]

CONNECTIONS = 4  # the daemon opens one per 200 streams (2,400 streams: 12)
MODES = {"flood": 25_000, "paced": 2_000}  # mode -> frames per connection
PACE_S = 0.001  # paced: seconds between a connection's frames
DISTINCT_FRAMES = 2_000  # frames cycled through (symbols x timeframes x open times x progress)
RUNS = 3
VARIANTS = ("websockets", "websockets_bytes", "websockets_iter", "picows")
DAEMON_SYMBOLS = 240  # x 2 timeframes = 480 streams, 3 connections
DAEMON_UPDATE_S = 0.2  # an update per stream every 0.2 s: ~2,400 frames/s
DAEMON_SETTLE_S, DAEMON_SECONDS = 10.0, 20.0
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CLOSE_1000 = b"\x88\x02" + (1000).to_bytes(2, "big")


# -- the frames ---------------------------------------------------------------------------------
def _payloads(n: int) -> list[bytes]:
    """``n`` combined-stream kline frames from the simulator's market model: forming updates
    and finals of every default symbol on 1m and 5m, as the simulator serializes them."""
    from ingestor.simulator.market import DEFAULT_SYMBOLS, INTERVAL_MS, Market

    market = Market(seed=17)
    start = 1_735_689_600_000  # 2025-01-01T00:00Z
    out: list[bytes] = []
    step = 0
    while len(out) < n:
        for symbol in DEFAULT_SYMBOLS:
            for tf in ("1m", "5m"):
                iv = INTERVAL_MS[tf]
                open_time = start + (step // 4) * iv
                now = open_time + (step % 4 + 1) * iv // 4  # 3 updates, then the final
                event = market.event(symbol, tf, open_time, now)
                name = f"{symbol.lower()}@kline_{tf}"
                out.append(orjson.dumps({"stream": name, "data": event}))
        step += 1
    return out[:n]


def _server_frame(payload: bytes) -> bytes:
    """An unmasked server-to-client text frame (RFC 6455) holding ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 1 << 16:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + payload


# -- the flood server (its own process) ---------------------------------------------------------
async def _read_client_frame(reader: asyncio.StreamReader) -> int:
    """Read one masked client frame; return its opcode."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    await reader.readexactly(4 + n)  # mask key + payload
    return int(b0 & 0x0F)


async def _flood(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames: list[bytes]
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        mode = "paced" if b"mode=paced" in head.split(b"\r\n", 1)[0] else "flood"
        count = MODES[mode]
        key = b""
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await _read_client_frame(reader)  # "go": the client's clock is running
        if mode == "flood":
            reps, rest = divmod(count, len(frames))
            blob = b"".join(frames) * reps + b"".join(frames[:rest])
            for i in range(0, len(blob), 1 << 20):
                writer.write(blob[i : i + (1 << 20)])
                await writer.drain()
        else:
            for i in range(count):
                writer.write(frames[i % len(frames)])
                await writer.drain()
                await asyncio.sleep(PACE_S)
        writer.write(_CLOSE_1000)
        await writer.drain()
        while await _read_client_frame(reader) != 0x8:  # until the client's close frame
            pass
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


async def _serve(pipe: Connection, frames: list[bytes]) -> None:
    server = await asyncio.start_server(
        lambda r, w: _flood(r, w, frames), "127.0.0.1", 0, limit=1 << 16
    )
    pipe.send(server.sockets[0].getsockname()[1])
    async with server:
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"


def _server_process(pipe: Connection) -> None:
    asyncio.run(_serve(pipe, [_server_frame(p) for p in _payloads(DISTINCT_FRAMES)]))


# -- the clients (each in a fresh process) ------------------------------------------------------
class _Sink:
    """What the feed hands each frame to, reduced to counting it."""

    __slots__ = ("frames", "nbytes")

    def __init__(self) -> None:
        self.frames = 0
        self.nbytes = 0

    def __call__(self, raw: str | bytes) -> None:
        self.frames += 1
        self.nbytes += len(raw)


async def _websockets(url: str, variant: str, sink: _Sink) -> float:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed

    conns = [
        await connect(  # the daemon's options (ingestor.feed.connection)
            url,
            ping_interval=20,
            ping_timeout=60,
            open_timeout=10,
            close_timeout=2,
            max_size=2**22,
            max_queue=256,
        )
        for _ in range(CONNECTIONS)
    ]

    async def timed_recv(ws: ClientConnection, decode: bool) -> None:
        with suppress(ConnectionClosed):
            while True:
                async with asyncio.timeout(30.0):  # the daemon's silence check
                    raw = await ws.recv(decode=decode)
                sink(raw)

    async def iterate(ws: ClientConnection) -> None:
        async for raw in ws:
            sink(raw)

    t0 = time.process_time()
    for ws in conns:
        await ws.send("go")
    async with asyncio.TaskGroup() as tg:
        for ws in conns:
            if variant == "websockets_iter":
                tg.create_task(iterate(ws))
            else:
                tg.create_task(timed_recv(ws, variant == "websockets"))
    return time.process_time() - t0


async def _picows(url: str, sink: _Sink) -> float:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Listener(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.TEXT:
                sink(frame.get_payload_as_bytes())
            elif kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    transports = [
        (await ws_connect(Listener, url, max_frame_size=2**22))[0] for _ in range(CONNECTIONS)
    ]
    t0 = time.process_time()
    for tr in transports:
        tr.send(WSMsgType.TEXT, b"go")
    for tr in transports:
        await tr.wait_disconnected()
    return time.process_time() - t0


def _client(variant: str, mode: str, port: int) -> dict[str, float]:
    """One measurement of ``variant`` in this (fresh) process."""
    import uvloop

    url = f"ws://127.0.0.1:{port}/stream?streams=bench&mode={mode}"
    sink = _Sink()
    w0 = time.perf_counter()
    if variant == "picows":
        cpu = uvloop.run(_picows(url, sink))
    else:
        cpu = uvloop.run(_websockets(url, variant, sink))
    wall = time.perf_counter() - w0
    expected = CONNECTIONS * MODES[mode]
    if sink.frames != expected:
        raise RuntimeError(f"{variant}: {sink.frames} frames received, {expected} sent")
    return {"cpu_s": cpu, "wall_s": wall, "frames": sink.frames, "bytes": sink.nbytes}


def _in_fresh_process(variant: str, mode: str, port: int) -> dict[str, float]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, float] = pool.apply(_client, (variant, mode, port))
    return result


def _decode_us(payloads: list[bytes]) -> float:
    """Median microseconds of ``orjson.loads`` per frame over ``payloads``."""
    times = []
    for _ in range(5):
        t0 = time.process_time()
        for p in payloads:
            orjson.loads(p)
        times.append(time.process_time() - t0)
    return statistics.median(times) / len(payloads) * 1e6


def _mode(mode: str, port: int) -> dict[str, Any]:
    """Every variant ``RUNS`` times in rotating order; medians of CPU per frame."""
    per_frame: dict[str, list[float]] = {v: [] for v in VARIANTS}
    nbytes = 0
    for r in range(RUNS):
        for variant in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:
            res = _in_fresh_process(variant, mode, port)
            per_frame[variant].append(res["cpu_s"] / res["frames"] * 1e6)
            nbytes = int(res["bytes"])
    frames = CONNECTIONS * MODES[mode]
    median = {v: statistics.median(per_frame[v]) for v in VARIANTS}
    base = median["websockets"]
    print(
        f"{mode}: {frames} kline frames ({nbytes / frames:.0f} B mean) over {CONNECTIONS}"
        f" connections, client CPU per frame, median of {RUNS}:"
    )
    for v in VARIANTS:
        runs = ", ".join(f"{x:.2f}" for x in per_frame[v])
        print(f"  {v:17s} {median[v]:6.2f} us  ({base / median[v]:.2f}x websockets; runs {runs})")
    return {
        "frames_per_run": frames,
        "mean_frame_bytes": round(nbytes / frames, 1),
        "cpu_us_per_frame": {v: round(median[v], 2) for v in VARIANTS},
        "cpu_us_per_frame_runs": {v: [round(x, 2) for x in per_frame[v]] for v in VARIANTS},
        "vs_websockets": {v: round(base / median[v], 2) for v in VARIANTS},
    }


# -- the daemon end to end ----------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (its own, not its children's)."""
    import os
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _frames_received(health: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{health}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("ingestor_frames_received_total "):
                return int(float(line.split()[1]))
    raise RuntimeError("no ingestor_frames_received_total on /metrics")


def _daemon_once(client: str, sim: Any) -> dict[str, float]:
    """One run of the daemon with ``client`` against ``sim``: CPU per frame over the window."""
    import subprocess
    import sys
    import tempfile
    import urllib.error
    import urllib.request
    from pathlib import Path

    from ingestor.embedded import free_port

    port = free_port()
    health = f"http://127.0.0.1:{port}"
    symbols = ", ".join(f'"S{i:04d}USDT"' for i in range(DAEMON_SYMBOLS))
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "config.toml"
        conf.write_text(
            f'[exchange]\nws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\n'
            f'ws_client = "{client}"\n'
            f'[ingest]\nsymbols = [{symbols}]\ntimeframes = ["1m", "5m"]\n'
            f"warmup_candles = 100\n"
            f'[health]\nport = {port}\n[service]\ndata_dir = "{tmp}/data"\n'
            f'log_level = "WARNING"\nevent_loop = "uvloop"\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingestor", "run", "--config", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if _frames_received(health) > 0:
                        break
                except (OSError, urllib.error.HTTPError, RuntimeError):
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"daemon ({client}) received no frame")
                time.sleep(0.5)
            time.sleep(DAEMON_SETTLE_S)
            c0, f0, w0 = _cpu_s(proc.pid), _frames_received(health), time.perf_counter()
            time.sleep(DAEMON_SECONDS)
            c1, f1, w1 = _cpu_s(proc.pid), _frames_received(health), time.perf_counter()
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    frames = f1 - f0
    return {
        "cpu_us_per_frame": (c1 - c0) / max(frames, 1) * 1e6,
        "frames_per_s": frames / (w1 - w0),
        "cpu_share": (c1 - c0) / (w1 - w0),
    }


def daemon() -> dict[str, Any]:
    """The daemon end to end with each client (see the module docstring)."""
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from ingestor.embedded import free_port

    clients = ("websockets", "picows")
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in clients}
    port = free_port()
    symbols = ",".join(f"S{i:04d}USDT" for i in range(DAEMON_SYMBOLS))
    sim_proc = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "simulate", "--port", str(port), "--symbols", symbols,
         "--update-interval", str(DAEMON_UPDATE_S), "--weight-limit", "1000000"],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sim = SimpleNamespace(ws_url=f"ws://127.0.0.1:{port}", rest_url=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{sim.rest_url}/api/v3/ping", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for r in range(RUNS):
            for client in clients if r % 2 == 0 else clients[::-1]:
                runs[client].append(_daemon_once(client, sim))
    finally:
        sim_proc.terminate()
        sim_proc.wait(10)
    out: dict[str, Any] = {"streams": DAEMON_SYMBOLS * 2, "seconds": DAEMON_SECONDS, "runs": RUNS}
    for c in clients:
        per = [x["cpu_us_per_frame"] for x in runs[c]]
        out[c] = {
            "cpu_us_per_frame": round(statistics.median(per), 1),
            "cpu_us_per_frame_runs": [round(x, 1) for x in per],
            "frames_per_s": round(statistics.median(x["frames_per_s"] for x in runs[c])),
            "cpu_share": round(statistics.median(x["cpu_share"] for x in runs[c]), 3),
        }
    ratio = out["websockets"]["cpu_us_per_frame"] / max(out["picows"]["cpu_us_per_frame"], 1e-9)
    out["websockets_over_picows"] = round(ratio, 2)
    print(
        f"daemon end to end, {out['streams']} streams, CPU of the daemon per frame received,"
        f" median of {RUNS}:"
    )
    for c in clients:
        runs_text = ", ".join(f"{x:.1f}" for x in out[c]["cpu_us_per_frame_runs"])
        print(
            f"  {c:11s} {out[c]['cpu_us_per_frame']:6.1f} us  ({out[c]['frames_per_s']} frames/s,"
            f" {out[c]['cpu_share']:.1%} of a core; runs {runs_text})"
        )
    print(f"  websockets / picows: {ratio:.2f}x")
    return out


def run() -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    server = ctx.Process(target=_server_process, args=(theirs,), daemon=True)
    server.start()
    try:
        port = int(ours.recv())
        figures: dict[str, Any] = {"connections": CONNECTIONS, "runs": RUNS}
        for mode in MODES:
            figures[mode] = _mode(mode, port)
    finally:
        ours.send("stop")
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()
    figures["orjson_loads_us_per_frame"] = round(_decode_us(_payloads(DISTINCT_FRAMES)), 2)
    print(f"for scale: orjson.loads of one frame {figures['orjson_loads_us_per_frame']:.2f} us")
    figures["daemon"] = daemon()
    return figures

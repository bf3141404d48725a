"""A feed connection over ``wss://`` (Binance's streams are TLS only), proven for every websocket
client against a real TLS websocket server on 127.0.0.1 whose certificates are made here by the
``openssl`` tool: a certificate chaining to a trusted CA is verified and the frames reach the
sink; an untrusted CA or a certificate for another host is refused and reported, never accepted.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from ingestor.failures import Failures
from ingestor.feed.clients import WS_CLIENTS, connection_class
from ingestor.feed.connection import FeedConnection
from ingestor.feed.limits import AttemptBudget
from ingestor.retry import Backoff
from tests.ingestor.feed.helpers import running
from tests.integration.harness import eventually

pytestmark = pytest.mark.parametrize("client", WS_CLIENTS)

STREAM = "btcusdt@kline_1m"


def kline_frame(i: int) -> str:
    """One combined-stream kline frame as Binance sends it."""
    k = {"t": 60_000 * i, "T": 60_000 * i + 59_999, "s": "BTCUSDT", "i": "1m", "x": False}
    return json.dumps({"stream": STREAM, "data": {"e": "kline", "E": 1, "s": "BTCUSDT", "k": k}})


FRAMES = [kline_frame(i) for i in range(5)]


@dataclass(frozen=True)
class Pki:
    ca: Path  # the test CA's certificate (the trust store)
    server: tuple[Path, Path]  # cert, key for localhost and 127.0.0.1, signed by the CA
    other_host: tuple[Path, Path]  # cert, key for other.invalid only, signed by the CA


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _leaf(d: Path, name: str, san: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (d / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
    ext.write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", key, "-out", csr, "-subj", f"/CN={name}"),
    )
    _openssl(
        *("x509", "-req", "-in", csr, "-CA", d / "ca.pem", "-CAkey", d / "ca.key"),
        *("-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext),
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "2"),
        *("-subj", "/CN=ingestor test CA"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    return Pki(
        ca=d / "ca.pem",
        server=_leaf(d, "localhost", "DNS:localhost,IP:127.0.0.1"),
        other_host=_leaf(d, "other", "DNS:other.invalid"),
    )


def trusting(pki: Pki) -> ssl.SSLContext:
    """A client context verifying as production does, against a store holding the test CA."""
    return ssl.create_default_context(cafile=pki.ca)


@dataclass
class TlsServer:
    """A TLS websocket server sending FRAMES on each connection, recording what it saw."""

    tls_sessions: list[str] = field(default_factory=list)  # the TLS version of each connection
    paths: list[str] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        ssl_object = ws.transport.get_extra_info("ssl_object")
        self.tls_sessions.append("" if ssl_object is None else str(ssl_object.version()))
        self.paths.append(ws.request.path if ws.request is not None else "")
        with contextlib.suppress(Exception):
            for frame in FRAMES:
                await ws.send(frame)
            await ws.wait_closed()


class Sink:
    def __init__(self) -> None:
        self.got: list[str] = []

    async def __call__(self, raw: str | bytes) -> bool:
        self.got.append(raw.decode() if isinstance(raw, bytes) else raw)
        return False


@contextlib.asynccontextmanager
async def tls_server(cert: tuple[Path, Path]) -> AsyncIterator[tuple[TlsServer, int]]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    server = TlsServer()
    async with serve(server.handler, "127.0.0.1", 0, ssl=ctx) as ws_server:
        yield server, ws_server.sockets[0].getsockname()[1]


def connection(
    client: str, url: str, sink: Sink, failures: Failures, ctx: ssl.SSLContext | None
) -> FeedConnection:
    return connection_class(client)(
        0,
        url,
        sink,
        AttemptBudget(),
        backoff=Backoff(0.01, 0.05),
        failures=failures,
        ssl_context=ctx,
    )


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_a_trusted_certificate_is_verified_and_the_frames_delivered(
    client: str, host: str, pki: Pki
) -> None:
    """``wss://host:port/...`` (a port, a path, a query) with the test CA in the trust store."""
    sink, failures = Sink(), Failures()
    async with tls_server(pki.server) as (server, port):
        url = f"wss://{host}:{port}/stream?streams={STREAM}"
        async with running(connection(client, url, sink, failures, trusting(pki))) as conn:

            async def delivered() -> bool:
                return len(sink.got) >= len(FRAMES)

            await eventually(delivered, 15, "every frame over TLS")
            assert conn.state.connected
    assert sink.got[: len(FRAMES)] == FRAMES
    assert server.tls_sessions and all(v.startswith("TLSv1.") for v in server.tls_sessions)
    assert server.paths[0] == f"/stream?streams={STREAM}"
    assert not failures


@pytest.mark.parametrize(
    ("case", "host", "reason_text"),
    [
        ("untrusted CA", "127.0.0.1", "unable to get local issuer certificate"),
        ("another host's certificate", "127.0.0.1", "ip address mismatch"),
        ("another host's certificate", "localhost", "hostname mismatch"),
    ],
)
async def test_a_certificate_that_does_not_verify_is_refused_and_reported(
    client: str, case: str, host: str, reason_text: str, pki: Pki
) -> None:
    """The default trust store (the system's) does not hold the test CA; a certificate the CA
    signed for another host fails the host name (or IP address) check. Either way no websocket
    is opened, no frame reaches the sink, the connection keeps re-trying (slowly), and the
    failure stands in ``Failures`` as a permanent ``tls_certificate`` with the reason."""
    sink, failures = Sink(), Failures()
    cert = pki.server if case == "untrusted CA" else pki.other_host
    ctx = None if case == "untrusted CA" else trusting(pki)
    async with tls_server(cert) as (server, port):
        url = f"wss://{host}:{port}/stream?streams={STREAM}"
        conn = connection(client, url, sink, failures, ctx)
        conn._recheck_s = 0.05
        async with running(conn):

            async def reported() -> bool:
                return failures.counts[(conn.component, "tls_certificate")] >= 2

            await eventually(reported, 15, "the certificate failure reported (twice: re-tried)")
            assert not conn.state.connected
    reasons = failures.reasons()
    assert reasons[conn.component].startswith("tls_certificate: SSLCertVerificationError")
    assert reason_text in reasons[conn.component].lower()
    assert sink.got == [] and server.tls_sessions == []


async def test_without_a_context_the_default_store_is_used_and_honours_ssl_cert_file(
    client: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No injected context: the library default (the system store), which an operator can
    point at a private CA bundle with ``SSL_CERT_FILE`` (as the untrusted case shows, the test CA
    is not trusted without it)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    sink, failures = Sink(), Failures()
    async with tls_server(pki.server) as (server, port):
        url = f"wss://localhost:{port}/stream?streams={STREAM}"
        async with running(connection(client, url, sink, failures, None)):

            async def delivered() -> bool:
                return len(sink.got) >= len(FRAMES)

            await eventually(delivered, 15, "every frame over TLS")
    assert sink.got[: len(FRAMES)] == FRAMES and not failures
    assert server.tls_sessions[0].startswith("TLSv1.")


async def test_the_ssl_context_is_not_used_for_a_plain_ws_url(client: str, pki: Pki) -> None:
    """A context given for wss:// leaves a ws:// URL (the simulator's) working in plain text."""
    sink, failures = Sink(), Failures()
    server = TlsServer()
    async with serve(server.handler, "127.0.0.1", 0) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/stream?streams={STREAM}"
        async with running(connection(client, url, sink, failures, trusting(pki))):

            async def delivered() -> bool:
                return len(sink.got) >= len(FRAMES)

            await eventually(delivered, 15, "every frame in plain text")
    assert server.tls_sessions[0] == ""

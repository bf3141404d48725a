"""The embedded database: a SecantusDB server (MongoDB wire protocol) run as a child process.

Used when ``mongodb.uri`` is empty, so that the daemon and its demo run with nothing installed.
Production should point ``mongodb.uri`` at MongoDB 7+. The server is the optional extra
``embedded`` (``pip install 'bot-core-ingestor[embedded]'``), which the production image leaves
out; without it an empty ``mongodb.uri`` is a configuration error saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import sys
from pathlib import Path

from pymongo import AsyncMongoClient

from ingestor.errors import ConfigError, StoreError

__all__ = ["EMBEDDED_MISSING", "EmbeddedMongo", "free_port"]

EMBEDDED_MISSING = (
    "is empty, which means the embedded SecantusDB server, but its package is not installed: "
    "set mongodb.uri (INGESTOR_MONGODB__URI) to your MongoDB, or install the extra with "
    "pip install 'bot-core-ingestor[embedded]' (make install does)"
)

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedMongo:
    """``async with EmbeddedMongo(dir) as uri:`` starts the server and stops it on exit."""

    def __init__(self, storage: Path, port: int = 0, start_timeout_s: float = 30.0) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    async def __aenter__(self) -> str:
        if importlib.util.find_spec("secantus") is None:
            raise ConfigError("mongodb.uri", EMBEDDED_MISSING)
        self.storage.mkdir(parents=True, exist_ok=True)
        log.warning(
            "mongodb.uri is empty: starting the embedded SecantusDB server on port %d under %s; "
            "production should point mongodb.uri at MongoDB 7+",
            self.port,
            self.storage,
        )
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "secantus",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.storage),
            "--sync-on-commit",
            "--log-level",
            "WARNING",
            stdin=asyncio.subprocess.DEVNULL,
        )
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            self.uri, serverSelectionTimeoutMS=500
        )
        try:
            async with asyncio.timeout(self.start_timeout_s):
                while True:
                    if self.proc.returncode is not None:
                        raise StoreError(f"embedded database exited with {self.proc.returncode}")
                    try:
                        await client.admin.command("ping")
                        return self.uri
                    except Exception:
                        await asyncio.sleep(0.1)
        except TimeoutError:
            await self._stop()
            raise StoreError("embedded database did not start in time") from None
        finally:
            await client.close()

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

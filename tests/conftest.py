"""Shared fixtures: a real MongoDB-wire-protocol server, real data paths, timeouts.

Against ``MONGODB_URI`` when it is set (a real MongoDB), otherwise a SecantusDB server started
as a child process on a free port for the test session. Each test gets its own database name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
#: One factor scaling every wait in the tests (slow machines: TIMEOUT_FACTOR=3).
TIMEOUT_FACTOR = float(os.environ.get("TIMEOUT_FACTOR", "1"))

# Hypothesis' own timing checks (a 200 ms deadline per example, the too-slow health check) fail
# on a busy machine and say nothing about the code under test: off for every property test.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DBServer:
    """A SecantusDB child process that tests may stop and restart on the same storage."""

    def __init__(self, storage: Path, *args: str) -> None:
        self.storage = storage
        self.args = args  # extra server flags, e.g. --auth
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
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
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
        )
        client: MongoClient[dict[str, object]] = MongoClient(self.uri, serverSelectionTimeoutMS=300)
        deadline = time.monotonic() + 30 * TIMEOUT_FACTOR
        try:
            while True:
                try:
                    client.admin.command("ping")
                    return
                except Exception:
                    # Each ping itself waits up to serverSelectionTimeoutMS for the server.
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("SecantusDB did not start") from None
        finally:
            client.close()

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=30 * TIMEOUT_FACTOR)
        self.proc = None


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = os.environ.get("MONGODB_URI")
    if env:
        yield env
        return
    server = DBServer(tmp_path_factory.mktemp("secantus"))
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def db_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sync_db(mongo_uri: str, db_name: str) -> Iterator[object]:
    client: MongoClient[dict[str, object]] = MongoClient(mongo_uri, tz_aware=True)
    try:
        yield client[db_name]
    finally:
        client.drop_database(db_name)
        client.close()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real market data not found at {SHARED_DATA}")
    return SHARED_DATA

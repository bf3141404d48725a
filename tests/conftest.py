"""Shared fixtures: a real MongoDB-wire-protocol server, real data paths, timeouts.

Against ``MONGODB_URI`` when it is set (a real MongoDB), otherwise a SecantusDB server started
as a child process on a free port for the test session. Each test gets its own database name.

Real market data: ``tests/data/`` (trimmed, licensed slices; ``tests/data/SOURCES.md``) is all a
clone needs. ``../shared/data/`` (bigger series) and ``../shared/spec/`` are optional: tests that
use them fall back to the simulator's synthetic data or skip with a visible reason.
"""

from __future__ import annotations

import atexit
import functools
import gc
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from pymongo import MongoClient

from tests.orphans import collect_orphaned_sockets

REPO = Path(__file__).resolve().parents[1]
#: The repository's own real data (some files gzip-compressed): read it through data_dir().
TEST_DATA = REPO / "tests" / "data"
#: Optional, outside the repository: bigger real series, and the platform's schema spec.
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
#: The platform's schema spec: ``../shared/spec`` when it is beside the clone, else the
#: repository's copy of it (``tests/data/spec``; test_spec.py holds the two equal).
SHARED_SPEC_MD = SHARED / "spec" / "database-schema.md"
SPEC_COPY_MD = TEST_DATA / "spec" / "database-schema.md"
SPEC_MD = SHARED_SPEC_MD if SHARED_SPEC_MD.is_file() else SPEC_COPY_MD
#: One factor scaling every wait in the tests (slow machines: TIMEOUT_FACTOR=3).
TIMEOUT_FACTOR = float(os.environ.get("TIMEOUT_FACTOR", "1"))
#: pytest-timeout's limit for a test marked ``slow`` (the others: ``timeout`` in pyproject),
#: both scaled by TIMEOUT_FACTOR.
SLOW_TIMEOUT_S = 120


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test gets its time limit as a ``timeout`` mark: ``--timeout`` or the ini's (or
    ``slow``'s), times TIMEOUT_FACTOR; a test's own ``timeout`` mark wins, ``--timeout=0`` is
    no limit."""
    base = float(config.getoption("timeout", None) or config.getini("timeout") or 0)
    for item in items:
        if item.get_closest_marker("timeout") is not None or not base:
            continue
        limit = SLOW_TIMEOUT_S if item.get_closest_marker("slow") is not None else base
        item.add_marker(pytest.mark.timeout(limit * TIMEOUT_FACTOR))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything imported so far (numpy, pandas, hypothesis, every module under test) is
    frozen out of the collector's sight: the full collection after each test then scans only
    what tests made (~0.3 ms instead of ~80 ms here)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _orphaned_sockets_closed() -> Iterator[None]:
    """After each test, the sockets PyMongo orphans are closed (tests/orphans.py), so their
    warning cannot fail a later test; any other unclosed socket fails the test that left it."""
    yield
    collect_orphaned_sockets()


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


@functools.cache
def data_dir() -> Path:
    """``tests/data`` as plain files (each ``x.gz`` written as ``x``) in a temporary folder, made
    once per process: the simulator's replay and the tests read paths, not archives."""
    out = Path(tempfile.mkdtemp(prefix="ingestor-test-data-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    for src in TEST_DATA.rglob("*"):
        if not src.is_file() or src.name == "SOURCES.md":
            continue
        dst = out / src.relative_to(TEST_DATA)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".gz":
            with gzip.open(src) as fin, dst.with_suffix("").open("wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            shutil.copyfile(src, dst)
    return out


def shared_data() -> Path | None:
    """``../shared/data`` when it exists (bigger real series), else None: callers then use the
    repository's slices or the simulator's synthetic data, never skip for its absence."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The repository's real market data (``tests/data``), laid out like ``../shared/data``."""
    return data_dir()

"""What the writer really sends and how it fails: write concern, read preference, timeouts,
permanent errors. Read from the driver's command monitoring, not from the code; against the
embedded server (or MONGODB_URI), and a fake wire server for a hung or refusing one."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import numpy as np
import pytest
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent

from ingestor import embedded
from ingestor.config import MongoConfig
from ingestor.errors import ConfigError, StoreError
from ingestor.positions import ensure_positions_schema
from ingestor.schema import apply
from ingestor.state import PipelineState
from ingestor.store.database import client_options, wait_for_primary
from ingestor.store.schema import ensure_schema
from ingestor.store.writer import DATABASE, CandleStore
from tests.conftest import REPO, TIMEOUT_FACTOR
from tests.ingestor.positions.helpers import Commands, D, Env, spec_position
from tests.ingestor.store.fakewire import FakeWire
from tests.ingestor.store.test_writer import KEYS, _candles


class Recorder(CommandListener):
    """Every command the driver starts, as sent."""

    def __init__(self) -> None:
        self.started_events: list[CommandStartedEvent] = []

    def started(self, event: CommandStartedEvent) -> None:
        self.started_events.append(event)

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def named(self, name: str) -> list[dict[str, Any]]:
        return [dict(e.command) for e in self.started_events if e.command_name == name]


def _uri(uri: str, set_name: str | None, **params: str) -> str:
    """``uri`` with ``params`` added; a direct connection to a replica-set member becomes a
    replica-set connection, so the driver sends the read preference as it would in production."""
    base, _, query = uri.partition("?")
    opts = dict(parse_qsl(query))
    if set_name and opts.pop("directConnection", None) is not None:
        opts["replicaSet"] = set_name
    opts.update(params)
    return f"{base}?{urlencode(opts)}"


async def test_writes_are_majority_journaled_and_deciding_reads_go_to_the_primary(
    mongo_uri: str, db_name: str
) -> None:
    probe: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    set_name = (await probe.admin.command("hello")).get("setName")
    await probe.close()
    rec = Recorder()
    uri = _uri(mongo_uri, set_name, readPreference="secondaryPreferred")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri, event_listeners=[rec], **client_options(MongoConfig(timeout_ms=5000))
    )
    try:
        db = client[db_name]
        await ensure_schema(db)
        store = CandleStore(db, KEYS)
        c = _candles(10)
        rec.started_events.clear()
        assert await store.insert(c.take(np.arange(6))) == 6
        assert await store.insert(c, suspect=True) == 4  # re-queries, inserts the rest
        inserts = rec.named("insert")
        assert len(inserts) == 2
        for cmd in inserts:
            assert cmd["writeConcern"] == {"w": "majority", "j": True}
            assert 0 < cmd["maxTimeMS"] <= 5000  # the client's timeoutMS bounds the write
        finds = rec.named("find")
        assert {f["readConcern"]["level"] for f in finds} == {"local", "majority"}
        for cmd in finds:
            # No $readPreference is "primary"; a direct connection may only say primaryPreferred
            pref = cmd.get("$readPreference", {"mode": "primary"})["mode"]
            assert pref == ("primary" if set_name else pref), cmd
            assert pref in ("primary", "primaryPreferred")
        if set_name:
            # The URI's preference is in force elsewhere, and overridden for the decisions.
            rec.started_events.clear()
            await db.market_data.find_one()
            assert rec.named("find")[0]["$readPreference"] == {"mode": "secondaryPreferred"}
    finally:
        await client.drop_database(db_name)
        await client.close()


async def test_a_hung_server_fails_the_write_within_timeout_ms() -> None:
    async with FakeWire("hang") as fake:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            fake.uri, **client_options(MongoConfig(timeout_ms=500))
        )
        state = PipelineState(len(KEYS))
        failed = asyncio.Event()

        def on_state(ok: bool) -> None:
            state.set_db_ok(ok)
            if not ok:
                failed.set()

        store = CandleStore(client["db"], KEYS, on_state=on_state)
        t0 = time.monotonic()
        task = asyncio.create_task(store.insert(_candles(3)))
        try:
            async with asyncio.timeout(0.5 + 2 * TIMEOUT_FACTOR):
                await failed.wait()
            elapsed = time.monotonic() - t0
            assert fake.commands[0] == "insert"  # it reached the server, which never answered
            assert elapsed >= 0.4, elapsed
            assert state.db_ok is False  # readiness turns red (health: database check)
            assert not store.failures  # a timeout is transient: retried, not a permanent fault
        finally:
            task.cancel()
            await client.close()


async def test_an_unauthorized_write_is_logged_once_reported_and_rechecked_slowly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeWire("unauthorized") as fake:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            fake.uri, **client_options(MongoConfig(timeout_ms=2000))
        )
        states: list[bool] = []
        recheck_s = 0.3
        store = CandleStore(client["db"], KEYS, on_state=states.append, recheck_s=recheck_s)
        with caplog.at_level(logging.INFO):
            t0 = time.monotonic()
            task = asyncio.create_task(store.insert(_candles(3)))
            try:
                deadline = t0 + 10 * TIMEOUT_FACTOR
                while sum(store.failures.counts.values()) < 3:
                    assert time.monotonic() < deadline, "no permanent failure reported"
                    await asyncio.sleep(0.02)
                elapsed = time.monotonic() - t0
            finally:
                task.cancel()
                await client.close()
        reports = sum(store.failures.counts.values())
        # One attempt per re-check, not a busy loop: at most one more command in flight.
        assert len(fake.commands) <= reports + 1
        assert elapsed >= (reports - 1) * recheck_s
        assert set(store.failures.counts) == {(DATABASE, "unauthorized (13)")}
        assert store.failures.reasons()[DATABASE].startswith("unauthorized (13): ")
        assert states and not any(states)
        lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 1 and "Unauthorized" not in lines[0].name
        assert "permanent failure" in lines[0].getMessage()
        assert "unauthorized (13)" in lines[0].getMessage()


async def test_a_permanent_failure_at_startup_is_fatal_with_its_reason() -> None:
    async with FakeWire("unauthorized") as fake:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            fake.uri, **client_options(MongoConfig(timeout_ms=2000))
        )
        try:
            with pytest.raises(StoreError, match=r"cannot use the database: unauthorized \(13\)"):
                await wait_for_primary(client["db"], deadline_s=30)
            assert fake.commands == ["ping"]  # no retries of a permanent failure
        finally:
            await client.close()


async def test_the_daemon_exits_1_with_the_reason_when_its_user_may_not(tmp_path: Path) -> None:
    async with FakeWire("unauthorized") as fake:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[mongodb]\nuri = "{fake.uri}"\n[health]\nport = 0\n'
            f'[service]\ndata_dir = "{tmp_path}"\nlog_format = "text"\n'
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ingestor",
            "run",
            "--config",
            str(config),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60 * TIMEOUT_FACTOR):
            out, _ = await proc.communicate()
        text = out.decode()
        assert proc.returncode == 1, text
        failed = [ln for ln in text.splitlines() if "failed:" in ln]
        assert len(failed) == 1 and "cannot use the database: unauthorized (13)" in failed[0]


async def test_an_empty_uri_without_the_embedded_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "secantus" else real(name, *a),
    )
    with pytest.raises(ConfigError) as info:
        async with embedded.EmbeddedMongo(tmp_path / "db"):
            pass
    assert info.value.key == "mongodb.uri"
    assert "pip install 'bot-core-ingestor[embedded]'" in str(info.value)
    assert not (tmp_path / "db").exists()


async def test_margin_alerts_are_written_majority_journaled(mongo_uri: str, db_name: str) -> None:
    rec = Recorder()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, event_listeners=[rec], **client_options(MongoConfig(timeout_ms=5000))
    )
    try:
        db = client[db_name]
        await apply(db, ["positions", "notifications", "audit_logs"])
        await ensure_positions_schema(db)
        env = Env(db, Commands(db_name))
        await db.positions.insert_one(spec_position(total_fees=D("0")))
        loop = env.loop(census_every=1000)
        env.price("BTCUSDT", "48000")
        await loop.refresh_once()
        rec.started_events.clear()
        env.price("BTCUSDT", "46000")  # the margin ratio crosses below alert_below
        assert (await loop.refresh_once()).alerts == 1
        alert_writes = [
            cmd
            for name in ("insert", "update")
            for cmd in rec.named(name)
            if cmd.get(name) in ("notifications", "audit_logs")
            or (name == "update" and any("$unset" in u["u"] for u in cmd.get("updates", [])))
        ]
        assert {c.get("insert", c.get("update")) for c in alert_writes} == {
            "notifications",
            "audit_logs",
            "positions",
        }
        for cmd in alert_writes:
            assert cmd["writeConcern"] == {"w": "majority", "j": True}, cmd
    finally:
        await client.drop_database(db_name)
        await client.close()

"""Least privilege, exercised: the roles of ``deploy/mongodb/roles.json`` created on a server that
enforces authentication, the schema step run as its own user (``ingestor schema apply``), the
daemon run as the daemon's user; a user without insert rights turns readiness red with the
reason. Against SecantusDB started with ``--auth``, or MONGODB_URI when its user may create
roles and users (skipped with the reason otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import OperationFailure

from ingestor.config import MongoConfig
from ingestor.failures import Failures
from ingestor.schema.verify import diff
from ingestor.simulator import SimConfig, Simulator
from ingestor.store.database import client_options
from ingestor.store.schema import DAEMON_COLLECTIONS, MARKET_DATA, SCHEMA, ensure_schema
from tests.conftest import REPO, TIMEOUT_FACTOR, DBServer
from tests.integration.test_ops import SPEED, _config, _http, _metrics, _until

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

ROLES_FILE = REPO / "deploy" / "mongodb" / "roles.json"
SPEC: dict[str, Any] = json.loads(ROLES_FILE.read_text())
PASSWORDS = {"INGESTOR_PASSWORD": "daemon-pw", "INGESTOR_SCHEMA_PASSWORD": "schema-pw"}
REAL = bool(os.environ.get("MONGODB_URI"))


def _as_user(uri: str, user: str, password: str, auth_db: str) -> str:
    """``uri`` authenticating as ``user`` against ``auth_db``."""
    scheme, _, rest = uri.partition("://")
    authority, _, query = rest.partition("?")
    hosts_path = authority.rpartition("@")[2]
    hosts, _, _ = hosts_path.partition("/")
    opts = dict(parse_qsl(query))
    opts["authSource"] = auth_db
    return f"{scheme}://{quote(user)}:{quote(password)}@{hosts}/?{urlencode(opts)}"


def _rebind(doc: Any, name: str) -> Any:
    """The file's documents for database ``name`` (what setup.js does)."""
    return json.loads(json.dumps(doc).replace(json.dumps(SPEC["database"]), json.dumps(name)))


def test_the_daemon_role_covers_its_five_collections_and_nothing_else() -> None:
    roles = {r["createRole"]: r for r in SPEC["roles"]}
    daemon = roles["ingestorDaemon"]["privileges"]
    named = {p["resource"]["collection"] for p in daemon}
    assert named == {*DAEMON_COLLECTIONS, f"system.buckets.{MARKET_DATA}", ""}
    for p in daemon:
        coll = p["resource"]["collection"]
        want = (
            {"listCollections"}
            if coll == ""
            else {"find", "insert", "update", "remove", "createIndex", "listIndexes"}
        )
        assert set(p["actions"]) == want, coll
    assert not named & {"users", "sessions", "api_keys"}
    assert roles["ingestorDaemon"]["roles"] == []  # inherits nothing
    schema = roles["ingestorSchema"]["privileges"]
    assert {"createCollection", "createIndex", "collMod"} <= set(schema[0]["actions"])
    assert {u["createUser"] for u in SPEC["users"]} == {"ingestor", "ingestor-schema"}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An admin URI of a server that enforces authentication."""
    env = os.environ.get("MONGODB_URI")
    if env:
        yield env
        return
    storage = tmp_path_factory.mktemp("authdb")
    server = DBServer(storage)
    server.start()
    c: MongoClient[dict[str, Any]]
    with MongoClient(server.uri) as c:
        c.admin.command(
            "createUser", "root", pwd="root-pw", roles=[{"role": "root", "db": "admin"}]
        )
    server.stop()
    server.args = ("--auth",)
    server.start()
    try:
        yield _as_user(server.uri, "root", "root-pw", "admin")
    finally:
        server.stop()


@pytest.fixture
async def provisioned(auth_server: str) -> AsyncIterator[tuple[str, str]]:
    """(admin URI, database) with the file's roles and users created in a fresh database."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(auth_server)
    db = admin[name]
    try:
        try:
            for role in _rebind(SPEC["roles"], name):
                await db.command(role)
        except OperationFailure as exc:
            pytest.skip(f"this server or user cannot create roles: {exc}")
        for user in _rebind(SPEC["users"], name):
            await db.command(
                {
                    "createUser": user["createUser"],
                    "pwd": PASSWORDS[user["passwordEnv"]],
                    "roles": user["roles"],
                }
            )
        yield auth_server, name
    finally:
        for cmd in ("dropAllUsersFromDatabase", "dropAllRolesFromDatabase"):
            with contextlib.suppress(OperationFailure):
                await db.command(cmd)
        await admin.drop_database(name)
        await admin.close()


def _user_uri(admin_uri: str, name: str, user: str) -> str:
    pw = PASSWORDS["INGESTOR_SCHEMA_PASSWORD" if user == "ingestor-schema" else "INGESTOR_PASSWORD"]
    return _as_user(admin_uri, user, pw, name)


async def _schema_apply(uri: str, name: str) -> tuple[int, str]:
    env = dict(os.environ, INGESTOR_MONGODB__URI=uri, INGESTOR_MONGODB__DATABASE=name)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingestor",
        "schema",
        "apply",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120 * TIMEOUT_FACTOR):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_daemon_waits_for_the_schema_job_then_runs_with_its_role(
    provisioned: tuple[str, str], tmp_path: Path, spawn: Any
) -> None:
    admin_uri, name = provisioned
    daemon_uri = _user_uri(admin_uri, name, "ingestor")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        daemon_uri, **client_options(MongoConfig(timeout_ms=5000))
    )
    try:
        # The daemon's role may not create collections: it verifies, reports and waits.
        failures = Failures()
        task = asyncio.create_task(ensure_schema(client[name], failures=failures, recheck_s=0.2))
        deadline = asyncio.get_running_loop().time() + 30 * TIMEOUT_FACTOR
        while SCHEMA not in failures.reasons():
            assert not task.done(), task
            assert asyncio.get_running_loop().time() < deadline, "no schema failure reported"
            await asyncio.sleep(0.05)
        assert failures.reasons()[SCHEMA].startswith("market_data_incomplete: ")
        assert not task.done()
        # The schema job, with its own user, creates everything; the daemon notices.
        code, out = await _schema_apply(_user_uri(admin_uri, name, "ingestor-schema"), name)
        assert code == 0, out
        async with asyncio.timeout(30 * TIMEOUT_FACTOR):
            await task
        assert not failures
        assert await diff(client[name], [MARKET_DATA]) == []
    finally:
        await client.close()

    symbols = ("BTCUSDT",)
    cfg = SimConfig(symbols=symbols, speed=SPEED, update_interval_s=0.1, seed=5)
    async with Simulator(cfg) as sim:
        conf = _config(tmp_path, sim, daemon_uri, name, 0, symbols)
        daemon = spawn(conf, tmp_path / "d.log")
        await daemon.start()
        base = await daemon.health_base()
        await _until(daemon, f"{base}/readyz", 200, 120, "ready with its role")
        await daemon.signal()
        assert await daemon.wait(15) == 0, daemon.output()[-3000:]
    assert "permanent failure" not in daemon.output()
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(admin_uri)
    try:
        assert await admin[name][MARKET_DATA].count_documents({}) > 0
    finally:
        await admin.close()


async def test_a_user_without_insert_rights_turns_readiness_red_with_the_reason(
    provisioned: tuple[str, str], tmp_path: Path, spawn: Any
) -> None:
    admin_uri, name = provisioned
    code, out = await _schema_apply(_user_uri(admin_uri, name, "ingestor-schema"), name)
    assert code == 0, out
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(admin_uri)
    try:
        await admin[name].command(
            {"createUser": "reader", "pwd": "reader-pw", "roles": [{"role": "read", "db": name}]}
        )
    finally:
        await admin.close()
    symbols = ("BTCUSDT",)
    cfg = SimConfig(symbols=symbols, speed=SPEED, update_interval_s=0.1, seed=6)
    async with Simulator(cfg) as sim:
        uri = _as_user(admin_uri, "reader", "reader-pw", name)
        conf = _config(tmp_path, sim, uri, name, 0, symbols)
        daemon = spawn(conf, tmp_path / "d.log")
        await daemon.start()
        base = await daemon.health_base()

        async def reported() -> bool:
            status, body = await _http(f"{base}/status")
            return status == 200 and "database" in body.get("permanent_errors", {})

        deadline = asyncio.get_running_loop().time() + 90 * TIMEOUT_FACTOR
        while not await reported():
            assert asyncio.get_running_loop().time() < deadline, daemon.output()[-3000:]
            await asyncio.sleep(0.2)
        _, st = await _http(f"{base}/status")
        assert st["ready"] is False and "permanent_errors" in st["failed"]
        assert st["permanent_errors"]["database"].startswith("unauthorized (13): ")
        status, body = await _http(f"{base}/readyz")
        assert status == 503 and body["status"] == "degraded"
        assert body["checks"]["permanent_errors"]["reasons"]["database"].startswith("unauthorized")
        _, text = await _http(f"{base}/metrics")
        key = (
            "ingestor_permanent_errors_total",
            (("component", "database"), ("reason", "unauthorized (13)")),
        )
        assert _metrics(text)[key] >= 1
        await daemon.signal()
        await daemon.wait(30)
    lines = [ln for ln in daemon.output().splitlines() if "permanent failure" in ln]
    # Logged once per component, not per attempt: the writer, and the positions loop (which
    # may not write either).
    database = [ln for ln in lines if '"message":"database: permanent failure' in ln]
    assert len(database) == 1, lines
    assert "unauthorized (13)" in database[0]
    assert len(lines) == len({ln.partition('"message":"')[2].partition(":")[0] for ln in lines})


async def test_the_daemon_user_cannot_touch_the_platform_s_secrets(
    provisioned: tuple[str, str],
) -> None:
    if not REAL:
        pytest.skip(
            "SecantusDB checks a custom role's privileges per database, not per collection; "
            "run with MONGODB_URI (MongoDB 7+) to prove users/sessions/api_keys are out of reach"
        )
    admin_uri, name = provisioned
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        _user_uri(admin_uri, name, "ingestor"), **client_options(MongoConfig(timeout_ms=5000))
    )
    try:
        for coll in ("users", "sessions", "api_keys"):
            with pytest.raises(OperationFailure) as info:
                await client[name][coll].find_one()
            assert info.value.code == 13
            with pytest.raises(OperationFailure) as info:
                await client[name][coll].insert_one({"x": 1})
            assert info.value.code == 13
        with pytest.raises(OperationFailure) as info:
            await client[name].create_collection("not_ours")
        assert info.value.code == 13
    finally:
        await client.close()

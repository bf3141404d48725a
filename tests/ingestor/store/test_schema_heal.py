"""Startup heals additive drift of the daemon's collections and waits for market_data's indexes;
``schema verify`` accepts a declared shard-key index. Against a real wire-protocol server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ingestor.config import parse_key_pattern
from ingestor.errors import StoreError
from ingestor.failures import Failures
from ingestor.schema.apply import apply, create_options
from ingestor.schema.spec import by_name, realize
from ingestor.schema.verify import Live, diff, diff_collection
from ingestor.store.schema import DAEMON_COLLECTIONS, MARKET_DATA, SCHEMA, ensure_schema
from tests.conftest import REPO, TIMEOUT_FACTOR


@pytest.fixture
async def db(mongo_uri: str, db_name: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        yield client[db_name]
    finally:
        await client.drop_database(db_name)
        await client.close()


async def _index_keys(db: AsyncDatabase[dict[str, Any]], name: str) -> set[tuple[Any, ...]]:
    return {tuple(ix["key"].items()) async for ix in await db[name].list_indexes()}


async def test_a_start_after_a_cut_off_create_builds_the_missing_indexes(
    db: AsyncDatabase[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    # A previous apply created market_data and died before its index builds.
    await db.create_collection(MARKET_DATA, **create_options(by_name(MARKET_DATA)))
    assert {d.kind for d in await diff(db, [MARKET_DATA])} == {"missing_index"}
    failures = Failures()
    with caplog.at_level(logging.INFO, logger="ingestor.store.schema"):
        await ensure_schema(db, failures=failures)
    assert await diff(db, DAEMON_COLLECTIONS) == []
    want = {tuple((k, v) for k, v in ix.keys) for ix in realize(by_name(MARKET_DATA)).indexes}
    assert want <= await _index_keys(db, MARKET_DATA)
    assert any(f"healed {MARKET_DATA}" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    assert not failures
    # The next start finds nothing to do.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ingestor.store.schema"):
        await ensure_schema(db, failures=failures)
    assert caplog.records == []


async def test_market_data_of_the_wrong_kind_keeps_the_daemon_not_ready_with_the_reason(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    # A regular collection where the spec wants time-series: nothing the daemon may fix.
    await db.create_collection(MARKET_DATA)
    failures = Failures()
    task = asyncio.create_task(ensure_schema(db, failures=failures, recheck_s=0.05))
    try:
        deadline = asyncio.get_running_loop().time() + 20 * TIMEOUT_FACTOR
        while SCHEMA not in failures.reasons():
            assert not task.done(), task
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        assert "market_data_incomplete" in failures.reasons()[SCHEMA]
        assert "time-series" in failures.reasons()[SCHEMA]
    finally:
        task.cancel()


async def test_concurrent_starts_build_the_schema_once_and_all_end_complete(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    reports = await asyncio.gather(*(ensure_schema(db) for _ in range(4)))
    assert await diff(db, DAEMON_COLLECTIONS) == []
    created = [c for r in reports for c in r.changes if c.startswith(f"created {MARKET_DATA} ")]
    assert 1 <= len(created) <= 4  # 7.0+: a repeated create of the same collection succeeds


def test_verify_accepts_a_declared_hashed_shard_key_as_listindexes_reports_it() -> None:
    spec = by_name(MARKET_DATA)
    indexes = [{"v": 2, "key": dict(ix.keys), "name": ix.name} for ix in realize(spec).indexes] + [
        {"v": 2, "key": {"symbol": "hashed"}, "name": "symbol_hashed"}
    ]
    live = Live(create_options(spec), indexes)
    assert [d.kind for d in diff_collection(spec, live)] == ["extra_index"]
    assert diff_collection(spec, live, parse_key_pattern("symbol:hashed")) == []
    # Only the declared key is accepted.
    assert [d.kind for d in diff_collection(spec, live, parse_key_pattern("symbol:1"))] == [
        "extra_index"
    ]


#: SecantusDB has no hashed indexes: against it the live check uses a ranged shard key.
SHARD_KEY = "symbol:hashed" if os.environ.get("MONGODB_URI") else "symbol:1"


async def test_verify_accepts_a_declared_shard_key_index(
    db: AsyncDatabase[dict[str, Any]], mongo_uri: str, db_name: str
) -> None:
    await apply(db)  # every collection of the spec: what the CLI verifies
    # The README's sharding recipe: the shard-key index first, then sh.shardCollection.
    pattern = parse_key_pattern(SHARD_KEY)
    await db[MARKET_DATA].create_index(list(pattern))
    drift = await diff(db)
    assert [(d.collection, d.kind, d.fix) for d in drift] == [(MARKET_DATA, "extra_index", None)]
    assert await diff(db, shard_keys={MARKET_DATA: pattern}) == []
    assert (await apply(db, shard_keys={MARKET_DATA: pattern})).in_sync
    # The CLI: --shard-key, and the config key mongodb.shard_key; without either: drift.
    env = dict(os.environ, INGESTOR_MONGODB__URI=mongo_uri, INGESTOR_MONGODB__DATABASE=db_name)
    for extra_args, extra_env in (
        (["--shard-key", SHARD_KEY], {}),
        ([], {"INGESTOR_MONGODB__SHARD_KEY": SHARD_KEY}),
        ([], {}),
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ingestor",
            "schema",
            "verify",
            "--json",
            *extra_args,
            cwd=REPO,
            env={**env, **extra_env},
            stdout=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60 * TIMEOUT_FACTOR):
            out, _ = await proc.communicate()
        body = json.loads(out)
        in_sync = bool(extra_args or extra_env)
        assert body["in_sync"] is in_sync, body
        assert proc.returncode == (0 if in_sync else 1)


@pytest.mark.parametrize("text", ["", "symbol:bogus", ":1", "symbol:1,", "$x:1"])
def test_a_bad_shard_key_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="field:1"):
        parse_key_pattern(text)


async def test_a_one_shot_command_fails_with_the_reason_instead_of_waiting(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    await db.create_collection(MARKET_DATA)  # regular, not time-series: nothing to heal
    with pytest.raises(StoreError, match=r"market_data_incomplete: .*time-series"):
        await ensure_schema(db, wait=False)

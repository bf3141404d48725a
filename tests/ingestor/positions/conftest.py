"""A database per test with every command it receives recorded (see helpers.Env)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from ingestor.positions import ensure_positions_schema
from ingestor.schema import apply
from tests.ingestor.positions.helpers import Commands, Env


@pytest.fixture
async def env(mongo_uri: str, db_name: str) -> AsyncIterator[Env]:
    commands = Commands(db_name)
    mc: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, tz_aware=True, event_listeners=[commands]
    )
    try:
        db = mc[db_name]
        # As the daemon starts: the spec's collections (with their validators), then the loop's.
        await apply(db, ["positions", "notifications", "audit_logs"])
        await ensure_positions_schema(db)
        commands.take()
        yield Env(db, commands)
    finally:
        await mc.drop_database(db_name)
        await mc.close()

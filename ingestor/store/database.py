"""Opening the configured database: MongoDB at ``mongodb.uri``, or the embedded SecantusDB server
under ``service.data_dir`` when the URI is empty. One place for every command (run, backfill,
gaps, schema)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ingestor.config import Config
from ingestor.embedded import EmbeddedMongo

__all__ = ["open_database"]


@contextlib.asynccontextmanager
async def open_database(config: Config) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """The configured database; the client (and an embedded server) close on exit."""
    async with contextlib.AsyncExitStack() as stack:
        uri = config.mongodb.uri
        if not uri:
            uri = await stack.enter_async_context(
                EmbeddedMongo(Path(config.service.data_dir) / "db")
            )
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri,
            tz_aware=True,
            serverSelectionTimeoutMS=config.mongodb.timeout_ms,
            connectTimeoutMS=config.mongodb.timeout_ms,
        )
        stack.push_async_callback(client.close)
        yield client[config.mongodb.database]

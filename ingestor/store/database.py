"""Opening the configured database: MongoDB at ``mongodb.uri``, or the embedded SecantusDB server
under ``service.data_dir`` when the URI is empty. One place for every command (run, backfill,
gaps, schema).

The client is bounded everywhere: ``timeoutMS`` (``mongodb.timeout_ms``) ends every operation,
so a hung socket is an error, not a wait forever. The start waits for a usable primary up to
``mongodb.server_selection_timeout_ms`` (an election takes ~12 s), retrying transient failures
with the one backoff; a permanent one (bad credentials) stops the start with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from ingestor.config import Config, MongoConfig
from ingestor.embedded import EmbeddedMongo
from ingestor.errors import StoreError
from ingestor.retry import Backoff, classify

__all__ = ["Database", "client_options", "open_database", "wait_for_primary"]

log = logging.getLogger(__name__)


def client_options(cfg: MongoConfig) -> dict[str, Any]:
    """Keyword arguments of every ``AsyncMongoClient`` the daemon makes."""
    return {
        "tz_aware": True,
        "timeoutMS": cfg.timeout_ms,
        "serverSelectionTimeoutMS": min(cfg.timeout_ms, cfg.server_selection_timeout_ms),
        "connectTimeoutMS": cfg.timeout_ms,
    }


async def wait_for_primary(db: AsyncDatabase[Any], deadline_s: float) -> None:
    """Ping (a primary: the client's default for commands) until it answers or ``deadline_s``
    passes; StoreError with the reason on a permanent failure or at the deadline."""
    end = time.monotonic() + deadline_s
    backoff = Backoff(base_s=0.25, cap_s=5.0)
    while True:
        try:
            await db.command("ping")
            return
        except PyMongoError as exc:
            verdict = classify(exc)
            if verdict.permanent:
                raise StoreError(f"cannot use the database: {verdict}") from exc
            left = end - time.monotonic()
            if left <= 0:
                raise StoreError(
                    f"no usable primary within {deadline_s:.0f}s "
                    f"(mongodb.server_selection_timeout_ms): {verdict}"
                ) from exc
            if backoff.failures == 0:
                log.warning("database not reachable yet (%s); retrying for %.0fs", verdict, left)
            await asyncio.sleep(min(backoff.next_delay(), left))


@contextlib.asynccontextmanager
async def open_database(config: Config) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    """The configured database, once a primary answers; the client (and an embedded server)
    close on exit."""
    async with contextlib.AsyncExitStack() as stack:
        uri = config.mongodb.uri
        if not uri:
            uri = await stack.enter_async_context(
                EmbeddedMongo(Path(config.service.data_dir) / "db")
            )
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri, **client_options(config.mongodb)
        )
        stack.push_async_callback(client.close)
        db = client[config.mongodb.database]
        await wait_for_primary(db, config.mongodb.server_selection_timeout_ms / 1000)
        yield db


class Database:
    """The configured database as a part handed to the service: ``async with database as db``
    opens it (:func:`open_database`); :meth:`ping` is the health probe's check, False while it
    is not open."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._stack = contextlib.AsyncExitStack()
        self._db: AsyncDatabase[dict[str, Any]] | None = None

    async def __aenter__(self) -> AsyncDatabase[dict[str, Any]]:
        self._db = await self._stack.enter_async_context(open_database(self._config))
        return self._db

    async def __aexit__(self, *exc: object) -> None:
        self._db = None
        await self._stack.aclose()

    async def ping(self) -> bool:
        db = self._db
        if db is None:
            return False
        await db.command("ping")
        return True

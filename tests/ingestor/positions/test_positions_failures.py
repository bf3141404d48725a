"""A permanent database failure of the positions loop (its user may not write) is reported once
and re-checked slowly, not retried every tick. Against a wire server that answers Unauthorized."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from ingestor.config import MongoConfig, PositionsConfig
from ingestor.failures import Failures
from ingestor.positions import PositionsLoop
from ingestor.state import PriceBook
from ingestor.store.database import client_options
from tests.conftest import TIMEOUT_FACTOR
from tests.ingestor.store.fakewire import FakeWire


async def test_an_unauthorized_positions_loop_reports_once_and_rechecks_slowly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeWire("unauthorized") as fake:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            fake.uri, **client_options(MongoConfig(timeout_ms=2000))
        )
        failures = Failures()
        recheck_s = 0.3
        loop = PositionsLoop(
            client["db"],
            PriceBook(),
            PositionsConfig(refresh_ms=10),  # a tick every 10 ms: a busy loop would show
            failures=failures,
            recheck_s=recheck_s,
        )
        with caplog.at_level(logging.WARNING):
            t0 = time.monotonic()
            task = asyncio.create_task(loop.run())
            try:
                deadline = t0 + 10 * TIMEOUT_FACTOR
                while sum(failures.counts.values()) < 3:
                    assert time.monotonic() < deadline, "no permanent failure reported"
                    await asyncio.sleep(0.02)
                elapsed = time.monotonic() - t0
            finally:
                task.cancel()
                await client.close()
    reports = sum(failures.counts.values())
    assert len(fake.commands) <= reports + 1
    assert elapsed >= (reports - 1) * recheck_s
    assert set(failures.counts) == {("positions", "unauthorized (13)")}
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "permanent failure" in lines[0], lines

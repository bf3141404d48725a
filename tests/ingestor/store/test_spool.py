"""The spool against a real wire-protocol server: every journaled batch stored exactly once."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ingestor.candles import Candles
from ingestor.config import IngestConfig
from ingestor.store import spool as spool_module
from ingestor.store.documents import datetime_to_ms
from ingestor.store.journal import Journal
from ingestor.store.schema import MARKET_DATA, ensure_schema
from ingestor.store.spool import MERGE_MAX_CANDLES, Spool
from ingestor.store.writer import CandleStore
from ingestor.streams import StreamKey
from tests.conftest import TIMEOUT_FACTOR

M = 60_000
KEYS = [StreamKey("BTCUSDT", "1m"), StreamKey("ETHUSDT", "1m")]
NAMES = [str(k) for k in KEYS]
T0 = 1_700_000_000_000 // M * M
SYNC_S = IngestConfig().journal_sync_after_ms / 1000


def _batch(first: int, n: int, sid: int = 1) -> Candles:
    rows = [
        [
            T0 + (first + i) * M,
            "1.10",
            "1.20",
            "1.00",
            "1.15",
            "5",
            T0 + (first + i) * M + M - 1,
            "5.5",
            i,
            "2",
            "2.2",
        ]
        for i in range(n)
    ]
    c = Candles.from_rows([sid] * n, rows)
    c.indicators = np.full((n, 8), np.nan)
    return c


@pytest.fixture
async def db(mongo_uri: str, db_name: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        await ensure_schema(client[db_name])
        yield client[db_name]
    finally:
        await client.drop_database(db_name)
        await client.close()


async def _stored_times(db: AsyncDatabase[dict[str, Any]]) -> list[int]:
    coll = db[MARKET_DATA]
    return sorted([datetime_to_ms(d["open_time"]) async for d in coll.find({}, {"open_time": 1})])


def _one_record(tmp_path: Path, batch: Candles) -> bytes:
    """The bytes one append of ``batch`` puts in a fresh journal."""
    j = Journal(tmp_path / "scratch", NAMES)
    j.append(batch)
    j.flush()
    data = j.path.read_bytes()
    j.close()
    return data


async def _drain(spool: Spool, batches: list[Candles]) -> None:
    """Replay, then append ``batches`` and run the spool until it has stored everything."""
    await spool.replay()
    run = asyncio.create_task(spool.run())
    for b in batches:
        spool.append(b)
    spool.close()
    async with asyncio.timeout(20 * TIMEOUT_FACTOR):
        await run


async def test_torn_first_record_stores_every_batch_once(
    tmp_path: Path, db: AsyncDatabase[dict[str, Any]]
) -> None:
    # A fresh journal's first append was cut short (ENOSPC, OOM kill, power loss): the damaged
    # record sits at offset 0.
    record = _one_record(tmp_path, _batch(0, 3))
    torn = record[: len(record) // 2]
    jdir = tmp_path / "journal"
    jdir.mkdir()
    (jdir / "market_data.journal").write_bytes(torn)

    journal = Journal(jdir, NAMES)
    assert len(journal) == 0
    inserts: list[int] = []
    spool = Spool(journal, CandleStore(db, KEYS), 4, lambda b, n, s: inserts.append(n), SYNC_S)
    await _drain(spool, [_batch(3, 3), _batch(6, 3), _batch(9, 3)])

    assert inserts == [9]  # appended together, waiting together: one insert
    assert await _stored_times(db) == [T0 + i * M for i in range(3, 12)]
    # The damaged bytes are set aside for diagnosis, not replayed, not in the way.
    aside = [p for p in jdir.iterdir() if p.name.startswith("market_data.journal.damaged")]
    assert len(aside) == 1 and aside[0].read_bytes() == torn
    assert journal.damaged_bytes == len(torn)
    journal.close()
    assert not journal.path.exists()


async def test_a_corrupt_middle_record_is_skipped_and_the_rest_replayed(
    tmp_path: Path, db: AsyncDatabase[dict[str, Any]]
) -> None:
    jdir = tmp_path / "journal"
    j = Journal(jdir, NAMES)
    for b in (_batch(0, 2), _batch(2, 2), _batch(4, 2)):
        j.append(b)
    j.flush()
    j.close()
    data = bytearray(j.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the second record
    j.path.write_bytes(bytes(data))
    journal = Journal(jdir, NAMES)
    inserts: list[int] = []
    spool = Spool(journal, CandleStore(db, KEYS), 4, lambda b, n, s: inserts.append(n), SYNC_S)
    await _drain(spool, [_batch(6, 1)])
    assert inserts == [4, 1]  # the two intact records replayed in one insert, then the new one
    assert await _stored_times(db) == [T0 + i * M for i in (0, 1, 4, 5, 6)]
    assert journal.damaged_regions == 1
    journal.close()


class _Gated(CandleStore):
    """The real store, its inserts held until ``open`` is set (a database slow to answer)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], keys: list[StreamKey]) -> None:
        super().__init__(db, keys)
        self.open = asyncio.Event()

    async def insert(self, candles: Candles, *, suspect: bool = False) -> int:
        await self.open.wait()
        return await super().insert(candles, suspect=suspect)


def _stored_until(n: int) -> tuple[list[int], asyncio.Event, Any]:
    """An ``on_stored`` keeping the open times stored, and an event set once there are ``n``."""
    times: list[int] = []
    done = asyncio.Event()

    def on_stored(batch: Candles, inserted: int, seconds: float) -> None:
        times.extend(batch.open_time.tolist())
        if len(times) >= n:
            done.set()

    return times, done, on_stored


async def test_a_batch_not_acknowledged_in_time_is_synced_off_the_loop_and_inserts_go_on(
    tmp_path: Path, db: AsyncDatabase[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal", NAMES)
    entered = threading.Event()
    release = threading.Event()
    syncs: list[str] = []
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        syncs.append(threading.current_thread().name)
        entered.set()
        if not release.wait(30 * TIMEOUT_FACTOR):
            raise AssertionError("never released")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    store = _Gated(db, KEYS)
    times, all_stored, on_stored = _stored_until(4)
    spool = Spool(journal, store, 8, on_stored, sync_after_s=0.05)
    run = asyncio.create_task(spool.run())
    spool.append(_batch(0, 1))
    async with asyncio.timeout(10 * TIMEOUT_FACTOR):
        await asyncio.to_thread(entered.wait)  # unacknowledged: synced, and the sync is stuck
    # The loop runs on, and a stuck sync holds up neither writes nor inserts.
    for i in range(1, 4):
        spool.append(_batch(i, 1))
    assert journal.pending == 0 and journal.written == 4
    store.open.set()
    async with asyncio.timeout(20 * TIMEOUT_FACTOR):
        await all_stored.wait()
    assert times == [T0 + i * M for i in range(4)]
    release.set()
    spool.close()
    async with asyncio.timeout(20 * TIMEOUT_FACTOR):
        await run
    assert len(syncs) == 1 and threading.main_thread().name not in syncs
    assert journal.syncs == 1 and journal.unsynced == 0
    assert await _stored_times(db) == [T0 + i * M for i in range(4)]
    journal.close()


async def test_a_batch_the_unacknowledged_sync_writes_wakes_the_writer(
    tmp_path: Path, db: AsyncDatabase[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal", NAMES)
    entered, release = threading.Event(), threading.Event()
    real_flush = journal.flush

    def held_flush() -> int:
        entered.set()
        if not release.wait(30 * TIMEOUT_FACTOR):
            raise AssertionError("never released")
        return real_flush()

    monkeypatch.setattr(journal, "flush", held_flush)
    store = _Gated(db, KEYS)
    times, both_stored, on_stored = _stored_until(2)
    first_stored = asyncio.Event()

    def on_each(batch: Candles, inserted: int, seconds: float) -> None:
        on_stored(batch, inserted, seconds)
        first_stored.set()

    spool = Spool(journal, store, 8, on_each, sync_after_s=0.05)
    run = asyncio.create_task(spool.run())
    spool.append(_batch(0, 1))  # its insert held: the syncer's flush for it starts
    async with asyncio.timeout(10 * TIMEOUT_FACTOR):
        await asyncio.to_thread(entered.wait)
    with monkeypatch.context() as m:
        m.setattr(journal, "write", lambda: 0)  # as while a flush moves the file
        spool.append(_batch(1, 1))
    assert journal.pending == 1
    store.open.set()
    async with asyncio.timeout(10 * TIMEOUT_FACTOR):
        await first_stored.wait()  # the writer has nothing written left: it waits
    release.set()  # the flush writes the second batch
    async with asyncio.timeout(10 * TIMEOUT_FACTOR):
        await both_stored.wait()
    assert times == [T0, T0 + M]
    spool.close()
    async with asyncio.timeout(20 * TIMEOUT_FACTOR):
        await run
    journal.close()


async def test_batches_acknowledged_in_time_cost_no_sync(
    tmp_path: Path, db: AsyncDatabase[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal", NAMES)
    syncs: list[int] = []
    monkeypatch.setattr(os, "fdatasync", syncs.append)
    times, all_stored, on_stored = _stored_until(5)
    spool = Spool(journal, CandleStore(db, KEYS), 8, on_stored, sync_after_s=60)
    run = asyncio.create_task(spool.run())
    for i in range(5):
        spool.append(_batch(i, 1))
        await asyncio.sleep(0)
    async with asyncio.timeout(20 * TIMEOUT_FACTOR):
        await all_stored.wait()
    spool.close()
    async with asyncio.timeout(20 * TIMEOUT_FACTOR):
        await run
    assert syncs == [] and journal.syncs == 0 and len(journal) == 0
    assert times == await _stored_times(db) == [T0 + i * M for i in range(5)]
    journal.close()


class _Counting(CandleStore):
    """The real store, keeping the size of every insert it was asked for."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], keys: list[StreamKey]) -> None:
        super().__init__(db, keys)
        self.sizes: list[int] = []

    async def insert(self, candles: Candles, *, suspect: bool = False) -> int:
        self.sizes.append(len(candles))
        return await super().insert(candles, suspect=suspect)


async def test_journaled_batches_waiting_together_share_one_insert_up_to_the_cap(
    tmp_path: Path, db: AsyncDatabase[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "MERGE_MAX_CANDLES", 5)
    store = _Counting(db, KEYS)
    journal = Journal(tmp_path / "journal", NAMES)
    stored: list[int] = []
    spool = Spool(journal, store, 2, lambda b, n, s: stored.append(n), SYNC_S)  # 3 re-read
    await _drain(spool, [_batch(2 * i, 2, sid=i % 2) for i in range(5)])
    assert store.sizes == [4, 4, 2] and stored == [4, 4, 2]
    assert len(await _stored_times(db)) == 10 and len(journal) == 0
    journal.close()


async def test_a_backlog_left_by_a_previous_run_is_replayed_in_merged_inserts(
    tmp_path: Path, db: AsyncDatabase[dict[str, Any]]
) -> None:
    jdir = tmp_path / "journal"
    j = Journal(jdir, NAMES)
    for i in range(40):
        j.append(_batch(i, 1))
    j.flush()
    j.close()
    store = _Counting(db, KEYS)
    journal = Journal(jdir, NAMES)
    spool = Spool(journal, store, 4, lambda b, n, s: None, SYNC_S)
    await _drain(spool, [])
    assert store.sizes == [40] <= [MERGE_MAX_CANDLES]
    assert await _stored_times(db) == [T0 + i * M for i in range(40)]
    journal.close()


async def test_batches_of_another_source_are_not_merged(
    tmp_path: Path, db: AsyncDatabase[dict[str, Any]]
) -> None:
    other = _batch(2, 2)
    other.source = "backfill"
    store = _Counting(db, KEYS)
    journal = Journal(tmp_path / "journal", NAMES)
    spool = Spool(journal, store, 4, lambda b, n, s: None, SYNC_S)
    await _drain(spool, [_batch(0, 2), other, _batch(4, 2)])
    assert store.sizes == [2, 2, 2]
    sources = [d["source"] async for d in db[MARKET_DATA].find({}).sort("open_time", 1)]
    assert sources == ["binance", "binance", "backfill", "backfill", "binance", "binance"]
    journal.close()

"""The write-ahead path from enriched batches to ``market_data``.

Every batch is written to the :class:`Journal` at once (the page cache: the event loop never
waits on the disk) and inserted right away; it is dropped from the journal once the database
acknowledged it (write concern ``j: true``: from then on the database holds it durably). A
batch the database has not acknowledged ``sync_after_s`` after it was written is made durable
in the journal, in a worker thread (group commit: one ``fdatasync`` for every batch written by
then). So on the usual path no batch costs a sync or a thread's wake-up, and still:

* a database outage costs memory only up to the cache bound (the rest waits on disk, synced
  within ``sync_after_s``; the feed keeps flowing);
* a kill -9 at any moment loses nothing (what was written is in the kernel's page cache): the
  next start replays the journal, inserting only what is missing;
* a power cut can lose only batches the database had not acknowledged, written less than
  ``sync_after_s`` before it; the writer inserts in order, so they are the newest, past the
  stored watermark from which the next start fills every stream from the exchange.

Batches found waiting together (a slow database, an outage's backlog, a replay) go in one
insert, up to ``MERGE_MAX_CANDLES``: an insert costs about a millisecond of CPU and a round trip
whatever its size, so a writer that falls behind catches up instead of falling further behind.
A bounded cache of the newest batches spares re-reading them from disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from ingestor.candles import Candles
from ingestor.store.journal import Journal
from ingestor.store.sink import CandleSink

__all__ = ["MERGE_MAX_CANDLES", "Spool"]

log = logging.getLogger(__name__)

#: Candles one insert may gather from consecutive journaled batches (a single bigger batch still
#: goes alone).
MERGE_MAX_CANDLES = 4096

#: Called after each insert with (batch, documents inserted, seconds the insert took).
OnStored = Callable[[Candles, int, float], None]


class Spool:
    def __init__(
        self,
        journal: Journal,
        store: CandleSink,
        cache_max: int,
        on_stored: OnStored,
        sync_after_s: float,
    ) -> None:
        self.journal = journal
        self._store = store
        self._cache: deque[tuple[int, Candles]] = deque()
        self._cache_max = max(2, cache_max)
        self._on_stored = on_stored
        self._sync_after_s = sync_after_s
        self._wake = asyncio.Event()  # wakes the syncer: records to time or to flush
        self._idle = False  # the syncer waits for records to time
        self._written = asyncio.Event()  # wakes the writer
        self._closed = False

    def __len__(self) -> int:
        """Batches not yet stored."""
        return len(self.journal)

    def append(self, batch: Candles) -> None:
        """Journal the batch, then store it."""
        seq = self.journal.append(batch)
        if len(self._cache) < self._cache_max:
            self._cache.append((seq, batch))
        if self.journal.write():
            self._written.set()
            if self._idle:
                self._wake.set()
        else:  # left for a flush (the file is due to move, or moving)
            self._wake.set()

    def close(self) -> None:
        """No more batches: :meth:`run` returns once everything is stored."""
        self._closed = True
        self._wake.set()
        self._written.set()

    async def replay(self) -> None:
        """Batches a previous run journaled and may not have stored: insert what is missing."""
        if not self.journal.written:
            return
        log.info("replaying %d journaled batches from the previous run", self.journal.written)
        while self.journal.written:
            await self._store_waiting(suspect=True)

    async def run(self) -> None:
        """Store batches in order, syncing those left unacknowledged, until closed and
        drained."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sync(), name="journal-sync")
            tg.create_task(self._write(), name="journal-writer")

    async def _sync(self) -> None:
        journal = self.journal
        while True:
            self._wake.clear()
            if journal.pending:
                await self._flush()
            elif journal.unsynced:
                # Every half period, sync if anything written before the last one is not
                # stored: a batch waits at most the period (one written just after a check is
                # judged at the second), and one wake covers every batch of a period.
                written = journal.written_seq
                with contextlib.suppress(TimeoutError):  # woken early: records to flush
                    async with asyncio.timeout(self._sync_after_s / 2):
                        await self._wake.wait()
                if not journal.pending and journal.head_seq < written:
                    await self._flush()
            elif self._closed:
                return
            else:
                self._idle = True
                await self._wake.wait()
                self._idle = False

    async def _flush(self) -> None:
        """Sync in the worker thread; wake the writer, as the flush also writes what was
        appended while a flush held the file."""
        await asyncio.to_thread(self.journal.flush)
        self._written.set()

    async def _write(self) -> None:
        while True:
            if not self.journal.written:
                if self._closed and not len(self.journal):
                    return
                self._written.clear()
                await self._written.wait()
                continue
            await self._store_waiting(suspect=False)

    async def _store_waiting(self, *, suspect: bool) -> None:
        """One insert of the batches waiting at the journal's head, then consume them."""
        batches = self._waiting()
        batch = Candles.concat(batches)
        t0 = time.perf_counter()
        inserted = await self._store.insert(batch, suspect=suspect)
        for _ in batches:
            self.journal.consume()
        self._on_stored(batch, inserted, time.perf_counter() - t0)

    def _waiting(self) -> list[Candles]:
        """The oldest written batch and those written behind it that can share its insert (same
        source, indicators alike), up to ``MERGE_MAX_CANDLES`` in all; from the cache when it
        still holds them, else read back from the journal."""
        head = self.journal.head_seq
        while self._cache and self._cache[0][0] < head:
            self._cache.popleft()
        cached = {seq: batch for seq, batch in self._cache}
        out: list[Candles] = []
        total = 0
        for i in range(self.journal.written):
            batch = cached.get(head + i)
            if batch is None:
                batch = self.journal.peek(i)
                assert batch is not None
            if out and (
                total + len(batch) > MERGE_MAX_CANDLES
                or batch.source != out[0].source
                or (batch.indicators is None) != (out[0].indicators is None)
            ):
                break
            out.append(batch)
            total += len(batch)
        return out

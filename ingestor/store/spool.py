"""The write-ahead path from enriched batches to ``market_data``.

Every batch is appended to the :class:`Journal` and inserted only once it is durable there, and
dropped from the journal once the database acknowledged it (write concern ``j: true``). So a
database outage costs memory only up to the cache bound (the rest waits on disk, the feed keeps
flowing), and a kill -9 at any moment loses nothing: the next start replays the journal,
inserting only what is missing. A bounded cache of the newest batches spares re-reading them
from disk.

Two tasks: the syncer makes appended batches durable in a worker thread (group commit: every
batch appended by then shares one ``fdatasync``, and the event loop never waits on the disk;
batches appended during a flush wait for the next one), the writer inserts durable batches in
order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from ingestor.candles import Candles
from ingestor.store.journal import Journal
from ingestor.store.sink import CandleSink

__all__ = ["Spool"]

log = logging.getLogger(__name__)

#: Called after each stored batch with (batch, documents inserted, seconds the insert took).
OnStored = Callable[[Candles, int, float], None]


class Spool:
    def __init__(
        self, journal: Journal, store: CandleSink, cache_max: int, on_stored: OnStored
    ) -> None:
        self.journal = journal
        self._store = store
        self._cache: deque[tuple[int, Candles]] = deque()
        self._cache_max = max(2, cache_max)
        self._on_stored = on_stored
        self._appended = asyncio.Event()  # wakes the syncer
        self._durable = asyncio.Event()  # wakes the writer
        self._closed = False

    def __len__(self) -> int:
        """Batches not yet stored."""
        return len(self.journal)

    def append(self, batch: Candles) -> None:
        """Journal the batch (durable at the syncer's next flush), then store it."""
        seq = self.journal.append(batch)
        if len(self._cache) < self._cache_max:
            self._cache.append((seq, batch))
        self._appended.set()

    def close(self) -> None:
        """No more batches: :meth:`run` returns once everything is durable and stored."""
        self._closed = True
        self._appended.set()
        self._durable.set()

    async def replay(self) -> None:
        """Batches a previous run journaled and may not have stored: insert what is missing."""
        if not self.journal.durable:
            return
        log.info("replaying %d journaled batches from the previous run", self.journal.durable)
        while (batch := self.journal.peek()) is not None:
            t0 = time.perf_counter()
            inserted = await self._store.insert(batch, suspect=True)
            self.journal.consume()
            self._on_stored(batch, inserted, time.perf_counter() - t0)

    async def run(self) -> None:
        """Make batches durable and store them in order until closed and drained."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._sync(), name="journal-sync")
            tg.create_task(self._write(), name="journal-writer")

    async def _sync(self) -> None:
        while True:
            if self.journal.pending:
                await asyncio.to_thread(self.journal.flush)
                self._durable.set()
            elif self._closed:
                return
            else:
                self._appended.clear()
                await self._appended.wait()

    async def _write(self) -> None:
        while True:
            if not self.journal.durable:
                if self._closed and not len(self.journal):
                    return
                self._durable.clear()
                await self._durable.wait()
                continue
            head = self.journal.head_seq
            while self._cache and self._cache[0][0] < head:
                self._cache.popleft()
            if self._cache and self._cache[0][0] == head:
                batch = self._cache[0][1]
            else:
                read = self.journal.peek()
                assert read is not None
                batch = read
            t0 = time.perf_counter()
            inserted = await self._store.insert(batch)
            self.journal.consume()
            self._on_stored(batch, inserted, time.perf_counter() - t0)

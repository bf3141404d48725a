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
order. Durable batches found waiting together (a flush's group, a slow database, an outage's
backlog, a replay) go in one insert, up to ``MERGE_MAX_CANDLES``: an insert costs about a
millisecond of CPU and a round trip whatever its size, so a writer that falls behind catches
up instead of falling further behind.
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

__all__ = ["MERGE_MAX_CANDLES", "Spool"]

log = logging.getLogger(__name__)

#: Candles one insert may gather from consecutive durable batches (a single bigger batch still
#: goes alone).
MERGE_MAX_CANDLES = 4096

#: Called after each insert with (batch, documents inserted, seconds the insert took).
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
        while self.journal.durable:
            await self._store_waiting(suspect=True)

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
        """The oldest durable batch and those durable behind it that can share its insert (same
        source, indicators alike), up to ``MERGE_MAX_CANDLES`` in all; from the cache when it
        still holds them, else read back from the journal."""
        head = self.journal.head_seq
        while self._cache and self._cache[0][0] < head:
            self._cache.popleft()
        cached = {seq: batch for seq, batch in self._cache}
        out: list[Candles] = []
        total = 0
        for i in range(self.journal.durable):
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

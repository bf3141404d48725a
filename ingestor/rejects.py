"""Quarantine of rejected input: counted per reason, logged once per reason with a sample,
and stored in ``market_data_rejects`` (raw payload, reason, stream, received_at; 7-day TTL).

Bounded in bytes, not only in count: the raw payload is stored clipped to ``MAX_RAW``
characters and the detail to ``MAX_DETAIL`` (each with its original length), a log sample is
``MAX_DETAIL`` characters, and the queue to the database holds at most ``max_bytes`` of them;
past that a reject is still counted but its copy dropped (``rejects_dropped`` on /metrics)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from ingestor.redact import clip
from ingestor.state import PipelineState
from ingestor.store.schema import REJECTS

__all__ = ["MAX_DETAIL", "MAX_QUEUED_BYTES", "MAX_RAW", "Reject", "RejectSink"]

log = logging.getLogger(__name__)
#: Characters of a raw payload stored (a real kline frame is under 1,000).
MAX_RAW = 2048
#: Characters of a detail stored, and of a log sample.
MAX_DETAIL = 300
#: Bytes (characters, roughly) of rejects waiting for the database.
MAX_QUEUED_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class Reject:
    raw: str
    reason: str
    detail: str
    stream: str | None
    received_at: datetime


class RejectSink:
    """Bounded queue of rejects and the task that writes them in batches."""

    def __init__(
        self, state: PipelineState, maxsize: int, *, max_bytes: int = MAX_QUEUED_BYTES
    ) -> None:
        self._state = state
        self._queue: asyncio.Queue[Reject | None] = asyncio.Queue(maxsize)
        self._logged: set[str] = set()
        self.max_bytes = max_bytes
        self.queued_bytes = 0

    @property
    def dropped(self) -> int:
        return self._state.rejects_dropped

    def reject(
        self, raw: str | bytes, reason: str, detail: str = "", stream: str | None = None
    ) -> None:
        """Count and queue one reject; never blocks the feed (a full queue only loses the copy)."""
        self._state.rejects[reason] += 1
        text = clip(raw, MAX_RAW)
        detail = clip(detail, MAX_DETAIL)
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning(
                "rejected input (%s: %s); sample: %s", reason, detail, clip(raw, MAX_DETAIL)
            )
        item = Reject(text, reason, detail, stream, datetime.now(UTC))
        size = _size(item)
        if self.queued_bytes + size > self.max_bytes:
            self._state.rejects_dropped += 1
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._state.rejects_dropped += 1
            return
        self.queued_bytes += size

    async def close(self) -> None:
        await self._queue.put(None)

    def _take(self, item: Reject | None) -> Reject | None:
        if item is not None:
            self.queued_bytes -= _size(item)
        return item

    async def _store(self, coll: Any, docs: list[dict[str, Any]], stopping: bool) -> None:
        """Insert, retrying through a database outage (the shutdown deadline bounds it)."""
        delay = 0.2
        while True:
            try:
                await coll.insert_many(docs, ordered=False)
                return
            except PyMongoError as exc:
                if delay == 0.2:
                    log.warning("could not store %d rejects yet (%s); retrying", len(docs), exc)
                if stopping and delay > 1:
                    log.error("dropping %d rejects: database unavailable at shutdown", len(docs))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def run(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        coll = db[REJECTS]
        while True:
            item = self._take(await self._queue.get())
            batch = [] if item is None else [item]
            done = item is None
            while not done and not self._queue.empty() and len(batch) < 500:
                nxt = self._take(self._queue.get_nowait())
                if nxt is None:
                    done = True
                else:
                    batch.append(nxt)
            if batch:
                docs = [
                    {
                        "raw": r.raw,
                        "reason": r.reason,
                        "detail": r.detail,
                        "stream": r.stream,
                        "received_at": r.received_at,
                    }
                    for r in batch
                ]
                await self._store(coll, docs, stopping=done)
            if done:
                return


def _size(item: Reject) -> int:
    return len(item.raw) + len(item.detail) + len(item.reason) + len(item.stream or "") + 64

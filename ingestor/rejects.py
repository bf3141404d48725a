"""Quarantine of rejected input: counted per reason, logged once per reason with a sample,
and stored in ``market_data_rejects`` (raw payload, reason, stream, received_at; 7-day TTL)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from ingestor.state import PipelineState
from ingestor.store.schema import REJECTS

__all__ = ["Reject", "RejectSink"]

log = logging.getLogger(__name__)
_MAX_RAW = 4096


@dataclass(frozen=True, slots=True)
class Reject:
    raw: str
    reason: str
    detail: str
    stream: str | None
    received_at: datetime


class RejectSink:
    """Bounded queue of rejects and the task that writes them in batches."""

    def __init__(self, state: PipelineState, maxsize: int) -> None:
        self._state = state
        self._queue: asyncio.Queue[Reject | None] = asyncio.Queue(maxsize)
        self._logged: set[str] = set()

    @property
    def dropped(self) -> int:
        return self._state.rejects_dropped

    def reject(
        self, raw: str | bytes, reason: str, detail: str = "", stream: str | None = None
    ) -> None:
        """Count and queue one reject; never blocks the feed (a full queue only loses the copy)."""
        self._state.rejects[reason] += 1
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("rejected input (%s: %s); sample: %.300s", reason, detail, text)
        item = Reject(text[:_MAX_RAW], reason, detail, stream, datetime.now(UTC))
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._state.rejects_dropped += 1

    async def close(self) -> None:
        await self._queue.put(None)

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
            item = await self._queue.get()
            batch = [] if item is None else [item]
            done = item is None
            while not done and not self._queue.empty() and len(batch) < 500:
                nxt = self._queue.get_nowait()
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

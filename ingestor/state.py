"""Observable state of a running daemon: counters, per-stream progress, latest prices.

Plain objects owned by the service and handed to the stages that update them; the health
endpoint (and tests) read them. No globals.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ingestor.failures import Failures

__all__ = ["MAX_AHEAD_MS", "PipelineState", "PriceBook"]

log = logging.getLogger(__name__)

#: How far an event time may be ahead of the exchange's clock (ours, estimated) and still count.
MAX_AHEAD_MS = 60_000


@dataclass(slots=True)
class PriceBook:
    """Latest price per symbol from every kline event (closed or not), for the positions loop.

    A price replaces an older one only (by event time). Hence two guards: an event time more
    than ``max_ahead_ms`` ahead of ``now_ms`` (the exchange's clock) is ignored, or one hostile
    frame would make every later price "older" and freeze the symbol; and a symbol outside
    ``owned`` gets no entry (a feed sending unsubscribed symbols cannot grow the book). Ignored
    updates are counted per reason in ``ignored`` (on ``/metrics``) and logged once per reason.
    ``owned``/``now_ms`` None: no such check.
    """

    owned: Collection[str] | None = None
    now_ms: Callable[[], int] | None = None
    max_ahead_ms: int = MAX_AHEAD_MS
    ignored: Counter[str] = field(default_factory=Counter)
    prices: dict[str, str] = field(default_factory=dict)
    event_ms: dict[str, int] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)

    def update(self, symbol: str, price: str, event_ms: int) -> None:
        if self.owned is not None and symbol not in self.owned:
            self._ignore("unowned_symbol", symbol, event_ms)
        elif self.now_ms is not None and event_ms > self.now_ms() + self.max_ahead_ms:
            self._ignore("future_event_time", symbol, event_ms)
        elif event_ms >= self.event_ms.get(symbol, 0):
            self.prices[symbol] = price
            self.event_ms[symbol] = event_ms
            self.received_at[symbol] = time.monotonic()

    def _ignore(self, reason: str, symbol: str, event_ms: int) -> None:
        if not self.ignored[reason]:
            log.warning("price ignored (%s): %.40r at event time %d", reason, symbol, event_ms)
        self.ignored[reason] += 1


@dataclass(slots=True)
class PipelineState:
    n_streams: int
    frames: int = 0
    closed_klines: int = 0
    rest_klines: int = 0
    seam_duplicates: int = 0
    final_probes: int = 0
    healed: int = 0
    expired_skipped: int = 0  # REST klines already past the retention: indicators only
    expired_deleted: int = 0  # candles the daemon deleted past the retention (embedded server)
    retention_delete_failures: int = 0  # those deletes that failed (retried a minute later)
    journal_depth: int = 0
    journal_syncs: int = 0  # fdatasyncs of batches the database had not acknowledged in time
    journal_damaged_bytes: int = 0  # set aside at open (torn or corrupt records)
    journal_damaged_regions: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    rejects_dropped: int = 0  # counted, but the copy for the database dropped (queue full)
    prices_ignored: Counter[str] = field(default_factory=Counter)  # PriceBook.ignored
    batches: int = 0
    inserted: int = 0
    db_ok: bool = True
    db_failures: int = 0
    started: bool = False
    #: Standing permanent failures (readiness red with their reasons until cleared).
    failures: Failures = field(default_factory=Failures)
    last_stored_open: npt.NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.last_stored_open = np.full(self.n_streams, -1, dtype=np.int64)

    def set_db_ok(self, ok: bool) -> None:
        if not ok:
            self.db_failures += 1
        self.db_ok = ok

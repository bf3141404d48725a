"""The positions companion loop: latest prices -> every open position's P&L and margin ratio.

Each tick (``refresh_ms``): for every owned symbol whose latest price changed since it was last
applied and is fresh (received at most ``max_price_age_ms`` ago), one ``update_many`` with the
pipeline of :mod:`ingestor.positions.pipeline`; then one indexed find for positions that just
crossed the alert threshold and, only if there are some, their alerts. See the package docstring
for the command budget and the fields written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bson import Decimal128, ObjectId
from pymongo import UpdateMany
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from ingestor.config import PositionsConfig
from ingestor.errors import StoreError
from ingestor.failures import Failures
from ingestor.positions.alerts import alert_documents
from ingestor.positions.pipeline import (
    PENDING_FIELD,
    SYMBOL_INDEX,
    census_pipeline,
    pending_filter,
    refresh_filter,
    refresh_pipeline,
)
from ingestor.retry import RECHECK_S, classify
from ingestor.schema.spec import by_name, realize
from ingestor.state import PriceBook
from ingestor.store.concerns import deciding_reads, durable

__all__ = [
    "MAX_ALERTS_PER_TICK",
    "PositionsLoop",
    "PositionsStats",
    "RefreshResult",
    "ensure_positions_schema",
]

log = logging.getLogger(__name__)

#: Alerts written per tick at most (bounded memory in a crash); the rest stay pending, next tick.
MAX_ALERTS_PER_TICK = 5_000
#: The collections the loop writes. Their indexes and TTLs are the schema spec's
#: (``ingestor.schema.spec``), the sparse index on the pending alert mark among them (an index
#: this daemon owns: ``own_indexes``).
POSITIONS, NOTIFICATIONS, AUDIT_LOGS = "positions", "notifications", "audit_logs"
_CONFLICT_CODES = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
_DUPLICATE_KEY = 11000
_VALIDATION_FAILED = 121
_ALERT_PROJECTION = {
    "user_id": 1,
    "symbol": 1,
    "side": 1,
    "current_price": 1,
    "margin_ratio": 1,
    PENDING_FIELD: 1,
}


async def ensure_positions_schema(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Build the spec's indexes of the loop's collections that are missing (the per-symbol
    update needs ``{symbol, opened_at}``, finding the positions that just crossed needs the
    sparse one); never alters or drops what exists: an index that exists with other options is
    left alone (logged)."""
    for name in (POSITIONS, NOTIFICATIONS, AUDIT_LOGS):
        for ix in realize(by_name(name)).indexes:
            try:
                await db[name].create_index(list(ix.keys), name=ix.name, **ix.options())
            except OperationFailure as exc:
                if exc.code not in _CONFLICT_CODES:
                    raise
                log.warning("%s: keeping the existing index on %s (%s)", name, ix, exc)


@dataclass(slots=True)
class PositionsStats:
    """Counters since start (for /metrics); ``malformed_skipped`` (per reason) is a gauge: the
    positions the update filter skips, as of the last census."""

    ticks: int = 0
    symbols_updated: int = 0
    positions_matched: int = 0
    positions_modified: int = 0
    stale_skips: int = 0
    bad_prices: int = 0
    alerts_written: int = 0
    update_errors: int = 0
    tick_errors: int = 0
    commands: int = 0
    censuses: int = 0
    last_duration_s: float = 0.0
    malformed_skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one tick did. ``malformed`` is None on ticks without a census."""

    tick: ObjectId
    updated: tuple[str, ...]  # symbols whose positions were recomputed, sorted
    matched: int  # positions matched by the updates
    modified: int
    stale: tuple[str, ...]
    alerts: int
    malformed: dict[tuple[str, str], int] | None
    commands: int
    duration_s: float


@dataclass(slots=True)
class _Tick:
    """One tick as it goes: its id and time, whether it takes a census, the commands it has
    issued so far and what they found."""

    id: ObjectId
    now: datetime
    census: bool
    commands: int = 0
    updated: list[str] = field(default_factory=list)
    matched: int = 0
    modified: int = 0
    alerts: int = 0
    malformed: dict[tuple[str, str], int] | None = None


class PositionsLoop:
    """``await PositionsLoop(db, prices, config).run()`` until cancelled; tests drive
    :meth:`refresh_once`. ``symbols``: the symbols this replica owns (None: every symbol in
    ``prices``). ``census_every``: ticks between malformed-position censuses (and re-applying
    unchanged prices, so positions opened since get their fields)."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        prices: PriceBook,
        config: PositionsConfig,
        *,
        symbols: Collection[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        census_every: int = 60,
        on_tick: Callable[[RefreshResult], None] | None = None,
        failures: Failures | None = None,
        recheck_s: float = RECHECK_S,
    ) -> None:
        if census_every < 1:
            raise ValueError("census_every must be >= 1")
        self._db = db
        self._prices = prices
        self._config = config
        self._owned = frozenset(symbols) if symbols is not None else None
        self._clock = clock
        self._now = now
        self._census_every = census_every
        self._on_tick = on_tick or (lambda result: None)
        self._failures = failures if failures is not None else Failures()
        self._recheck_s = recheck_s
        self.stats = PositionsStats()
        self._applied: dict[str, str] = {}  # symbol -> price string last applied
        self._stale: set[str] = set()
        self._logged: set[str] = set()  # once-only log keys
        self._schema_ready = False
        self._validator: dict[str, Any] | None = None
        self._validator_loaded = False
        # Look for pending alert marks even without an update: at start (a crash may have left
        # some), after a failed alert write, and while more than one tick's worth remain.
        self._recheck_pending = True
        self._store_down = False

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every ``refresh_ms`` until cancelled. A database error costs a tick (logged once
        per outage; the symbols it missed are retried next tick); anything else propagates."""
        period = self._config.refresh_ms / 1000
        while True:
            started = self._clock()
            try:
                if not self._schema_ready:
                    await self._ensure_schema()
                self._on_tick(await self.refresh_once())
                if self._store_down:
                    log.info("positions: database reachable again")
                self._store_down = False
                self._failures.clear(POSITIONS)
            except StoreError as exc:
                self.stats.tick_errors += 1
                verdict = classify(exc.__cause__ or exc)
                if verdict.permanent:
                    # e.g. no update right: reported once, re-checked slowly (ingestor.retry)
                    self._failures.report(POSITIONS, verdict)
                    self._store_down = True
                    await asyncio.sleep(self._recheck_s)
                    continue
                if not self._store_down:
                    log.warning("positions: tick failed, retrying every tick: %s", exc)
                self._store_down = True
            await asyncio.sleep(max(0.0, period - (self._clock() - started)))

    async def _ensure_schema(self) -> None:
        try:
            await ensure_positions_schema(self._db)
        except PyMongoError as exc:
            raise StoreError(f"positions indexes: {exc}") from exc
        self._schema_ready = True

    async def load_validator(self) -> None:
        """Read the ``positions`` validator, if enforced on updates (validationLevel strict,
        validationAction error): the update filter then skips the documents it rejects, which
        would otherwise fail the whole ``update_many``. Done on the first tick and again after
        an update failed validation (the schema may have been migrated)."""
        try:
            infos = await (await self._db.list_collections(filter={"name": POSITIONS})).to_list()
        except PyMongoError as exc:
            raise StoreError(f"positions validator: {exc}") from exc
        options = infos[0].get("options", {}) if infos else {}
        enforced = (
            options.get("validationLevel", "strict") == "strict"
            and options.get("validationAction", "error") == "error"
        )
        self._validator = (options.get("validator") or None) if enforced else None
        self._validator_loaded = True

    async def refresh_once(self) -> RefreshResult:
        """One tick: the due prices applied, the alerts they raised written, and every
        ``census_every`` ticks the malformed positions counted. Raises StoreError when the
        database cannot be reached."""
        started = self._clock()
        commands = 0
        if not self._validator_loaded:
            await self.load_validator()
            commands += 1
        tick = _Tick(ObjectId(), self._now(), self.stats.ticks % self._census_every == 0, commands)
        self.stats.ticks += 1
        due, stale = self._due_prices(resync=tick.census)
        try:
            await self._apply_prices(tick, due)
            await self._raise_alerts(tick)
            if tick.census:
                await self._count_malformed(tick)
        except PyMongoError as exc:
            raise StoreError(f"positions refresh: {exc}") from exc
        finally:
            self.stats.commands += tick.commands
        return self._finish(tick, stale, started)

    async def _apply_prices(self, tick: _Tick, due: dict[str, tuple[str, Decimal128]]) -> None:
        """Recompute the positions of every due symbol: one ``update`` command carrying one
        updateMany statement per symbol (one round trip per tick, whatever the number of
        symbols and positions). A symbol whose statement failed keeps its old applied price."""
        if not due:
            return
        cfg = self._config
        symbols = sorted(due)
        ops = [
            UpdateMany(
                refresh_filter(symbol, self._validator),
                refresh_pipeline(
                    due[symbol][1], tick.now, tick.id, cfg.alert_below, cfg.recover_above
                ),
                hint=SYMBOL_INDEX,
            )
            for symbol in symbols
        ]
        tick.commands += 1
        failed: set[int] = set()
        try:
            res = await self._db[POSITIONS].bulk_write(ops, ordered=False)
            tick.matched, tick.modified = res.matched_count, res.modified_count
        except BulkWriteError as exc:
            details = exc.details
            tick.matched, tick.modified = details.get("nMatched", 0), details.get("nModified", 0)
            for err in details.get("writeErrors", []):
                failed.add(int(err["index"]))
                self._update_failed(symbols[int(err["index"])], err)
        for i, symbol in enumerate(symbols):
            if i not in failed:
                self._applied[symbol] = due[symbol][0]
                tick.updated.append(symbol)

    def _update_failed(self, symbol: str, err: dict[str, Any]) -> None:
        self.stats.update_errors += 1
        if err.get("code") == _VALIDATION_FAILED:
            self._validator_loaded = False  # changed under us: read it again
        self._log_once(
            f"update:{symbol}", "positions: update of %s failed: %s", symbol, err.get("errmsg")
        )

    async def _raise_alerts(self, tick: _Tick) -> None:
        """The alerts of positions that crossed, when prices were applied or marks may still
        be pending (a find, and the writes when it finds some)."""
        if not (tick.updated or self._recheck_pending):
            return
        self._recheck_pending = True
        tick.commands += 1
        tick.alerts, n = await self._write_alerts(tick.now)
        tick.commands += n

    async def _count_malformed(self, tick: _Tick) -> None:
        tick.malformed, n = await self._census()
        tick.commands += n

    def _finish(self, tick: _Tick, stale: tuple[str, ...], started: float) -> RefreshResult:
        """The tick's counts into the stats, and its result."""
        st = self.stats
        st.symbols_updated += len(tick.updated)
        st.positions_matched += tick.matched
        st.positions_modified += tick.modified
        st.last_duration_s = self._clock() - started
        return RefreshResult(
            tick.id,
            tuple(tick.updated),
            tick.matched,
            tick.modified,
            stale,
            tick.alerts,
            tick.malformed,
            tick.commands,
            st.last_duration_s,
        )

    # -- steps ---------------------------------------------------------------------------------

    def _due_prices(
        self, resync: bool
    ) -> tuple[dict[str, tuple[str, Decimal128]], tuple[str, ...]]:
        """Fresh prices that changed since applied (every fresh one when ``resync``)."""
        book, max_age_s = self._prices, self._config.max_price_age_ms / 1000
        now = self._clock()
        due: dict[str, tuple[str, Decimal128]] = {}
        stale: list[str] = []
        for symbol, text in list(book.prices.items()):
            if self._owned is not None and symbol not in self._owned:
                continue
            age = now - book.received_at.get(symbol, float("-inf"))
            if age > max_age_s:
                stale.append(symbol)
                self.stats.stale_skips += 1
                if symbol not in self._stale:
                    self._stale.add(symbol)
                    log.warning(
                        "positions: %s price is %.1f s old (max %.1f s): not applied until fresh",
                        symbol,
                        age,
                        max_age_s,
                    )
                continue
            if symbol in self._stale:
                self._stale.discard(symbol)
                log.info("positions: %s price fresh again", symbol)
            if text == self._applied.get(symbol) and not resync:
                continue
            try:
                value = Decimal(text)
                ok = value.is_finite() and value > 0
            except (InvalidOperation, TypeError):
                ok = False
            if not ok:
                self.stats.bad_prices += 1
                self._log_once(
                    f"price:{symbol}",
                    "positions: %s price %r is not a positive number: not applied",
                    symbol,
                    text,
                )
                continue
            due[symbol] = (text, Decimal128(text))
        return due, tuple(stale)

    async def _write_alerts(self, now: datetime) -> tuple[int, int]:
        """Notifications + audit entries for every pending crossing of owned symbols, then the
        marks cleared. Returns (alerts newly written, commands issued after the find)."""
        # Alerts are acknowledged only when no failover can roll them back (store.concerns).
        positions = durable(self._db[POSITIONS])
        pending = (
            await deciding_reads(positions)
            .find(
                pending_filter(self._owned),
                _ALERT_PROJECTION,
                hint=[(PENDING_FIELD, 1)],
                limit=MAX_ALERTS_PER_TICK,
                batch_size=MAX_ALERTS_PER_TICK,  # one command, no getMore
            )
            .to_list(None)
        )
        if not pending:
            self._recheck_pending = False
            return 0, 0
        notes, audits = zip(
            *(alert_documents(p, now, self._config.alert_below) for p in pending), strict=True
        )
        written = await self._insert_once(durable(self._db[NOTIFICATIONS]), list(notes))
        await self._insert_once(durable(self._db[AUDIT_LOGS]), list(audits))
        ticks = list({p[PENDING_FIELD] for p in pending})
        await positions.update_many(
            {"_id": {"$in": [p["_id"] for p in pending]}, PENDING_FIELD: {"$in": ticks}},
            {"$unset": {PENDING_FIELD: ""}},
        )
        self.stats.alerts_written += written
        self._recheck_pending = len(pending) >= MAX_ALERTS_PER_TICK
        for p in pending:
            log.info(
                "positions: margin alert %s %s %s ratio %.4g",
                p["_id"],
                p.get("symbol"),
                p.get("side"),
                p.get("margin_ratio"),
            )
        return written, 3

    @staticmethod
    async def _insert_once(coll: Any, docs: list[dict[str, Any]]) -> int:
        """Insert, taking an existing ``_id`` (a retried alert) as already written."""
        try:
            res = await coll.insert_many(docs, ordered=False)
            return len(res.inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            return int(exc.details.get("nInserted", 0))

    async def _census(self) -> tuple[dict[tuple[str, str], int], int]:
        """Count the positions the update filter excludes, per (symbol, reason); also
        returns the number of commands issued (0 or 1)."""
        symbols = self._owned if self._owned is not None else set(self._prices.prices)
        found: dict[tuple[str, str], int] = {}
        if symbols:
            cursor = await self._db[POSITIONS].aggregate(
                census_pipeline(symbols, self._validator), hint=SYMBOL_INDEX
            )
            async for row in cursor:
                key = (row["_id"]["symbol"], row["_id"]["reason"])
                found[key] = row["n"]
                self._log_once(
                    f"malformed:{key[1]}",
                    "positions: skipping malformed positions (%s): %d of %s, e.g. _id %s",
                    key[1],
                    row["n"],
                    key[0],
                    row["sample"],
                )
        by_reason: Counter[str] = Counter()
        for (_, reason), n in found.items():
            by_reason[reason] += n
        self.stats.malformed_skipped = by_reason
        self.stats.censuses += 1
        return found, 1 if symbols else 0

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(msg, *args)

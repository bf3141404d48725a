"""Positions: the latest prices turned into every open position's P&L and margin ratio.

``PositionsLoop(db, prices, config, symbols=...)`` runs beside the ingest pipeline and reads the
``PriceBook`` the feed fills from every kline event (closed or not). Per tick (``refresh_ms``),
for each owned symbol whose price changed since it was last applied, one server-side
``updateMany`` with an aggregation-pipeline update recomputes that symbol's positions from
their own fields, exactly, in Decimal128 (the price is the exchange's string as Decimal128).
The statements of all symbols travel in one ``update`` command (an unordered bulk write: one
round trip per tick; a statement that fails does not stop the others)::

    current_price  = price                                          s = +1 LONG, -1 SHORT
    unrealized_pnl = s * (current_price - entry_price) * quantity - total_fees
    total_pnl      = unrealized_pnl + realized_pnl
    pnl_percentage = total_pnl * 100 / margin_used                           (double)
    margin_ratio   = (margin_used + unrealized_pnl) / maintenance_margin     (double)
    metadata.max_favorable_excursion = max(previous, unrealized_pnl)  (only widens)
    metadata.max_adverse_excursion   = min(previous, unrealized_pnl)  (only widens)
    updated_at = last_price_update = the tick's time

A missing ``total_fees``/``realized_pnl`` counts as 0; a missing excursion starts at
``unrealized_pnl``. Spec example: entry 50000.00, price 51500.00, 0.1 LONG, fees 2.00, margin
500.00, maintenance 125.00 -> unrealized 148.000, total 148.000, pnl_percentage 29.6,
margin_ratio 5.184.

A price older than ``max_price_age_ms`` (by receipt time) is not applied: counted per tick and
logged once per symbol until it is fresh again.

**Malformed positions** (side not LONG/SHORT; entry_price, quantity, margin_used or
maintenance_margin missing, not numeric, or not > 0; total_fees, realized_pnl or an excursion
present but not numeric; metadata not an object) are excluded by the update's filter, so they
never fail the update of the others. So are documents the ``positions`` collection's own
validator rejects, when it is enforced (validationLevel strict, action error: the spec's, from
``ingestor schema apply``): updating one would fail the whole ``update_many`` at that document;
their reason is ``collection_validator`` (the validator is read on the first tick and again
after an update failed validation). Every ``census_every`` ticks (default 60) one aggregation
over the owned symbols counts them per (symbol, reason) (``stats.malformed_skipped``, a gauge), and
each reason is logged once with a sample ``_id``. A per-tick count would cost one more scan per
symbol per tick; the census costs one command per minute at the default refresh.

**Margin alerts**, once per crossing. Fields the loop keeps on each position:

    margin_alert_active   bool: set when margin_ratio < alert_below (1.5), cleared (re-armed)
                          when margin_ratio > recover_above (1.75)
    margin_alert_pending  ObjectId of the tick that saw the crossing; present only until its
                          alert is written (sparse index)

Both are set in the same pipeline update. After the updates, one indexed find of the pending
marks (owned symbols; at most 5,000 per tick, the rest next tick) and, if any, one
``insert_many`` into ``notifications``, one into ``audit_logs``, one ``update_many`` clearing
the marks. Alert ``_id``s derive from (position, tick), so a crash between insert and clear
never alerts twice (the retry hits the ``_id`` index).

``notifications`` (7-day TTL on ``created_at``; index user_id, read, created_at)::

    _id ObjectId, user_id (the position's), type "margin_alert", severity "warning" |
    "critical" (margin_ratio < 1.0), title, message, position_id, symbol, side,
    margin_ratio (double), threshold (alert_below), current_price (Decimal128),
    created_at, read false

``audit_logs`` (spec section 9; 180-day TTL on ``created_at``)::

    user_id null (the system), action "MARGIN_ALERT", resource "position", resource_id
    (str of the position _id), method/endpoint/user_agent null, ip_address "" (no client),
    status "SUCCESS", error_message null, metadata {owner_id, notification_id, symbol, side,
    margin_ratio, threshold, severity, current_price (string), tick_id}, timestamp, created_at

**Database commands per tick**: one ``update`` command (an ``updateMany`` statement per symbol
whose fresh price changed), plus one find when anything was updated or marks may remain (first
tick, failed alert write, a full batch last time) (+3 on a tick that writes alerts), plus one
aggregation on census ticks, on which unchanged fresh prices are re-applied too (so positions
opened since get their fields within ``census_every`` ticks); the first tick also reads the
validator (one ``listCollections``). A plain tick: 2 commands whatever the number of symbols;
at most 7. An idle tick (no price changed) issues none.
"""

from ingestor.positions.alerts import NOTIFICATION_TYPE
from ingestor.positions.loop import (
    MAX_ALERTS_PER_TICK,
    PositionsLoop,
    PositionsStats,
    RefreshResult,
    ensure_positions_schema,
)
from ingestor.positions.pipeline import REASONS

__all__ = [
    "MAX_ALERTS_PER_TICK",
    "NOTIFICATION_TYPE",
    "REASONS",
    "PositionsLoop",
    "PositionsStats",
    "RefreshResult",
    "ensure_positions_schema",
]

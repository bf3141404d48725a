"""Startup: each stream's watermark and converged indicator state, through :mod:`ingestor.history`.

Per stream, with ``W`` the newest stored open time (stored candles opening after the kline
forming on the exchange's clock are ignored: they are not real klines):

* **cold start** (nothing stored): the last ``warmup_candles`` closed klines are stored (only
  those inside the retention), with indicators computed over ``indicators.SEED_KLINES`` earlier
  klines too (fetched, not stored; from the exchange's first kline when its history is
  shorter), so they equal TA-Lib over the stream's whole history;
* **restart**: the last ``max(warmup_candles, SEED_KLINES)`` stored closes warm the indicators
  when they are contiguous (no request). Otherwise the window ``[W - (warmup_candles +
  SEED_KLINES - 1) intervals, W]`` is fetched: klines missing in its last ``warmup_candles``
  (writes a failed-over database acknowledged and then lost) are restored with converged
  indicators, and the fetched series warms the state. The work is bounded by that window,
  never by the distance between two stored open times.

The gate then fills each stream from its watermark up to now. Both go over up to
``ingest.startup_concurrency`` streams at once (:mod:`ingestor.fanout`), under the REST
client's weight budget.
"""

from __future__ import annotations

import logging

import numpy as np

import indicators
from ingestor.fanout import fan_out
from ingestor.pipeline import Tracks
from ingestor.store.sink import CandleSink

__all__ = ["restore_streams"]

log = logging.getLogger(__name__)


async def restore_streams(
    tracks: Tracks, store: CandleSink, warmup_candles: int, concurrency: int = 1
) -> None:
    """Each stream's watermark and indicator state from ``store`` (and REST); the candles to
    store go to ``tracks.emit``: the live path's write-ahead spool (journal -> writer), as the
    gate's batches. Up to ``concurrency`` streams at once (each stream's steps in order)."""
    n = len(tracks.keys)
    await fan_out(
        range(n),
        lambda sid: _restore(tracks, store, sid, warmup_candles),
        concurrency,
        lambda done: log.info("warm-up: %d of %d streams", done, n),
    )
    log.info("warmed %d streams; filling each from its watermark", n)


async def _restore(tracks: Tracks, store: CandleSink, sid: int, warmup_candles: int) -> None:
    history, enricher, sequencer, state = (
        tracks.history,
        tracks.enricher,
        tracks.sequencer,
        tracks.state,
    )
    key = tracks.keys[sid]
    need = max(warmup_candles, indicators.SEED_KLINES)
    # a stored candle opening after the kline forming now is no kline (a far-future row an
    # older version stored): ignored. Recent ones count, however close to now they closed.
    horizon = history.rest.clock.now_ms() + key.interval_ms
    times, closes = await store.history(key, need, before_ms=horizon)
    if not len(times):
        await _cold_start(tracks, sid, warmup_candles)
        return
    iv, last = key.interval_ms, int(times[-1])
    if len(times) == need and last - int(times[0]) == (need - 1) * iv:
        enricher.warm(sid, closes)
    else:
        first = last - (warmup_candles - 1) * iv
        series, _ = await history.seeded(sid, first, last)
        if len(series) and int(series.open_time[-1]) == last:
            window = series.open_time >= first
            lost = window & ~np.isin(series.open_time, times) & history.storable(series)
            if lost.any():
                tracks.emit(series.take(lost))
                healed = int(lost.sum())
                state.healed += healed
                log.warning("%s: %d missing klines inside the stored history restored", key, healed)
            enricher.warm(sid, series.close_f)
        else:
            log.warning("%s: the exchange did not confirm the stored history", key)
            enricher.warm(sid, closes)
    sequencer.set_watermark(sid, last)
    state.last_stored_open[sid] = last


async def _cold_start(tracks: Tracks, sid: int, warmup_candles: int) -> None:
    history, key = tracks.history, tracks.keys[sid]
    iv = key.interval_ms
    last = history.last_closed_open(sid)
    series, at = await history.seeded(sid, last - (warmup_candles - 1) * iv, last)
    if not len(series):
        tracks.sequencer.start_at(sid, last + iv)  # the exchange has nothing yet: its first is next
        return
    keep = np.zeros(len(series), dtype=bool)
    keep[at:] = True
    keep &= history.storable(series)
    stored = int(keep.sum())
    if stored:
        tracks.emit(series.take(keep))
    tracks.state.rest_klines += stored
    tracks.enricher.warm(sid, series.close_f)
    tracks.sequencer.set_watermark(sid, int(series.open_time[-1]))
    log.info(
        "%s: cold start stored %d klines (%d seeded only, %d past the retention)",
        key,
        stored,
        at,
        int((~keep[at:]).sum()),
    )

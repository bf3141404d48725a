"""Startup: each stream's watermark and indicator state, from what the database holds.

The last ``warmup_candles`` stored closes warm the indicators and the newest open time is the
watermark; the gate then fills from there to now. A stream with nothing stored starts
``warmup_candles`` klines back (stored, indicators from their start). Klines missing *inside*
the stored window (writes a failed-over database acknowledged and then lost) are restored first,
with indicators computed as the live path did.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from ingestor.candles import Candles
from ingestor.enrich import Enricher, batch_indicators
from ingestor.rest import RestClient
from ingestor.sequence import Sequencer
from ingestor.state import PipelineState
from ingestor.store.writer import CandleStore
from ingestor.streams import StreamKey

__all__ = ["restore_streams"]

log = logging.getLogger(__name__)


async def restore_streams(
    keys: list[StreamKey],
    store: CandleStore,
    rest: RestClient,
    enricher: Enricher,
    sequencer: Sequencer,
    state: PipelineState,
    warmup_candles: int,
) -> None:
    now = rest.clock.now_ms()
    for sid, key in enumerate(keys):
        times, closes = await store.history(key, warmup_candles)
        if len(times) and (times[-1] - times[0]) // key.interval_ms + 1 != len(times):
            state.healed += await _heal(sid, key, times, store, rest, warmup_candles)
            times, closes = await store.history(key, warmup_candles)
        if len(times):
            enricher.warm(sid, closes)
            sequencer.set_watermark(sid, int(times[-1]))
            state.last_stored_open[sid] = int(times[-1])
        else:
            sequencer.start_at(sid, (now // key.interval_ms - warmup_candles) * key.interval_ms)
    log.info("warmed %d streams; filling each from its watermark", len(keys))


async def _heal(
    sid: int,
    key: StreamKey,
    times: npt.NDArray[np.int64],
    store: CandleStore,
    rest: RestClient,
    warmup_candles: int,
) -> int:
    iv = key.interval_ms
    missing = np.setdiff1d(np.arange(times[0], times[-1] + iv, iv, dtype=np.int64), times)
    # Indicators as the live path computed them: over the stored series from its start (or a
    # full warm-up before the window when the series is longer).
    start = max(await store.first_open(key), int(times[0]) - warmup_candles * iv)
    rows: list[list[Any]] = []
    async for page in rest.closed_klines(
        key.symbol, key.timeframe, start, int(times[-1]), known_closed=True
    ):
        rows.extend(page)
    if not rows:
        return 0
    series = Candles.from_rows([sid] * len(rows), [r[:11] for r in rows])
    series.indicators = batch_indicators(series.close_f)
    inserted = await store.insert(series.take(np.isin(series.open_time, missing)), suspect=True)
    log.warning("%s: %d missing klines inside the stored history restored", key, inserted)
    return inserted

"""What ``market_data`` already holds for one stream and range: one indexed query.

The query is ``{symbol, timeframe, open_time: {$gte, $lte}}``, served by the spec's index
``{symbol: 1, timeframe: 1, open_time: -1}``; only ``open_time`` (and ``close_price`` when the
closes are wanted for indicators) is projected. It decides what is fetched and inserted, so it
reads from the primary whatever the URI's read preference (``store.concerns.deciding_reads``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from bson import Decimal128
from pymongo.asynchronous.collection import AsyncCollection

from ingestor.store.concerns import deciding_reads
from ingestor.store.documents import datetime_to_ms, ms_to_datetime
from ingestor.streams import StreamKey

__all__ = ["Stored", "read_stored"]

Stored = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]


async def read_stored(
    coll: AsyncCollection[dict[str, Any]],
    key: StreamKey,
    start_ms: int,
    end_ms: int,
    *,
    closes: bool = True,
) -> Stored:
    """Open times (ms, ascending, unique) and closes (float, NaN if not asked) of the stream's
    stored klines with open time in ``[start_ms, end_ms]``."""
    query = {
        "symbol": key.symbol,
        "timeframe": key.timeframe,
        "open_time": {"$gte": ms_to_datetime(start_ms), "$lte": ms_to_datetime(end_ms)},
    }
    projection = {"_id": 0, "open_time": 1, **({"close_price": 1} if closes else {})}
    times: list[int] = []
    values: list[float] = []
    async for doc in deciding_reads(coll).find(query, projection, batch_size=10_000):
        times.append(datetime_to_ms(doc["open_time"]))
        if closes:
            cp = doc.get("close_price")
            # float(Decimal) of the exchange's string == float(str): what the live path uses
            values.append(float(cp.to_decimal()) if isinstance(cp, Decimal128) else float("nan"))
    t = np.array(times, dtype=np.int64)
    c = np.array(values, dtype=np.float64) if closes else np.full(len(times), np.nan)
    t, first = np.unique(t, return_index=True)  # sorted; a duplicate is stored once more, not twice
    return t, c[first]

"""Backfill: REST history -> the live path's enrich and store, only what is missing.

``plan`` (pure: the closed-kline grid minus what is stored, :func:`missing_ranges`), ``existing``
(what the database holds, one indexed query per stream), ``pacing`` (the exchange's request
weight budget), ``run`` (fetch, indicators over the continuous series, store), ``progress``
(rich bars or log lines), ``job`` (wiring to the config, database and exchange) and ``cli``
(``ingestor backfill`` / ``ingestor gaps``).
"""

from ingestor.backfill.plan import Range, grid_bounds, missing_ranges, pages, range_count

__all__ = ["Range", "grid_bounds", "missing_ranges", "pages", "range_count"]

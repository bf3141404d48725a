"""The collections the daemon touches, made as the schema spec says (``ingestor.schema``).

At startup :func:`ensure_schema` runs ``ingestor schema apply`` (without ``--migrate``, with
``heal``) for the daemon's collections: what is missing is created with its indexes, options and
validator, a missing index is built; what else differs is logged as drift and left alone. A
least-privilege role (``deploy/mongodb/``) may not create collections: the daemon then verifies
and reports. It returns only once ``market_data`` exists as a time-series collection with its
indexes (writing earlier would make a plain collection, or run unindexed); until then readiness
is red with the reason and the check repeats slowly, so a schema job's work is picked up.
``market_data`` is time-series; the spec's TTL index on ``open_time`` becomes the collection's
``expireAfterSeconds`` (MongoDB allows no TTL index on a time-series collection's time field).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ingestor.config import KeyPattern
from ingestor.errors import StoreError
from ingestor.failures import Failures
from ingestor.retry import RECHECK_S, Backoff, Kind, Verdict, classify
from ingestor.schema.apply import ApplyReport, apply
from ingestor.schema.spec import by_name, realize

__all__ = [
    "DAEMON_COLLECTIONS",
    "MARKET_DATA",
    "MARKET_DATA_TTL_S",
    "REJECTS",
    "SCHEMA",
    "ensure_schema",
]

log = logging.getLogger(__name__)

MARKET_DATA = "market_data"
REJECTS = "market_data_rejects"
MARKET_DATA_TTL_S: int = realize(by_name(MARKET_DATA)).expire_after_s or 0
#: What the daemon reads or writes: candles, rejects, and (positions loop) positions,
#: margin notifications and their audit log entries.
DAEMON_COLLECTIONS = (MARKET_DATA, REJECTS, "positions", "notifications", "audit_logs")
#: The component name under which an incomplete schema is reported.
SCHEMA = "schema"
_BLOCKING = ("missing_collection", "missing_index", "timeseries")
_HINT = "run `ingestor schema apply` with the schema user (deploy/mongodb/schema-job.yaml)"


async def ensure_schema(
    db: AsyncDatabase[dict[str, Any]],
    *,
    failures: Failures | None = None,
    shard_key: KeyPattern = (),
    recheck_s: float = RECHECK_S,
    wait: bool = True,
) -> ApplyReport:
    """Create what is missing, build missing indexes; never alters or drops what exists (drift
    is logged once). Returns once ``market_data`` is complete (see the module doc); with
    ``wait=False`` (a one-shot command) an incomplete ``market_data`` is a StoreError instead."""
    failures = failures if failures is not None else Failures()
    keys = {MARKET_DATA: shard_key} if shard_key else None
    backoff = Backoff(base_s=0.5, cap_s=recheck_s)
    logged: set[str] = set()
    while True:
        try:
            report = await apply(db, DAEMON_COLLECTIONS, heal=True, shard_keys=keys)
        except StoreError as exc:
            if not wait:
                raise
            verdict = classify(exc.__cause__ or exc)
            if verdict.permanent:
                failures.report(SCHEMA, verdict, _HINT)
                await asyncio.sleep(recheck_s)
            else:
                log.warning("schema check failed (%s); retrying", verdict)
                await backoff.wait()
            continue
        for change in report.changes:
            log.info("schema: %s", change)
        denied = report.denied
        lines = [
            f"drift (see `ingestor schema verify`): {d}"
            for d in report.pending
            if not any(x.startswith(str(d)) for x in denied)
        ] + [f"this role may not change the schema, verified only ({_HINT}): {x}" for x in denied]
        for line in lines:
            if line not in logged:
                logged.add(line)
                log.warning("schema %s", line)
        blocking = [
            d for d in report.pending if d.collection == MARKET_DATA and d.kind in _BLOCKING
        ]
        if not blocking:
            failures.clear(SCHEMA)
            return report
        verdict = Verdict(Kind.PERMANENT, "market_data_incomplete", "; ".join(map(str, blocking)))
        if not wait:
            raise StoreError(f"{verdict}; {_HINT}")
        failures.report(SCHEMA, verdict, _HINT)
        await asyncio.sleep(recheck_s if report.denied else backoff.next_delay())

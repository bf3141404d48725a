"""The write concern and read preference of every write, and of the reads that decide one.

* Writes the daemon acknowledges onward (candles, whose batch then leaves the journal; margin
  alerts) use ``{w: "majority", j: true}``: acknowledged only once a majority of voting members
  has it in their journal, so no failover rolls it back. The bound is the client's
  ``timeoutMS`` (``mongodb.timeout_ms``); with it set, drivers send no ``wtimeout`` of their own.
* Reads that decide what to insert (the exactly-once re-query after a failed insert, backfill's
  plan) go to the primary whatever the URI's ``readPreference`` says, with read concern
  ``local``: a secondary may not have replicated what the primary holds (a duplicate follows),
  and ``majority`` would hide our own just-applied, not yet majority-committed writes.
  :data:`COMMITTED_READ` (``majority``) then tells whether what was found is durable.
"""

from __future__ import annotations

from typing import Any

from pymongo import ReadPreference, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.read_concern import ReadConcern

__all__ = ["COMMITTED_READ", "DURABLE_WRITE", "committed_reads", "deciding_reads", "durable"]

DURABLE_WRITE = WriteConcern(w="majority", j=True)
COMMITTED_READ = ReadConcern("majority")


def durable(coll: AsyncCollection[Any]) -> AsyncCollection[Any]:
    """``coll`` writing with ``{w: majority, j: true}``."""
    return coll.with_options(write_concern=DURABLE_WRITE)


def deciding_reads(coll: AsyncCollection[Any]) -> AsyncCollection[Any]:
    """``coll`` reading from the primary, read concern ``local``."""
    return coll.with_options(
        read_preference=ReadPreference.PRIMARY, read_concern=ReadConcern("local")
    )


def committed_reads(coll: AsyncCollection[Any]) -> AsyncCollection[Any]:
    """``coll`` reading from the primary what a majority has (survives any failover)."""
    return coll.with_options(read_preference=ReadPreference.PRIMARY, read_concern=COMMITTED_READ)

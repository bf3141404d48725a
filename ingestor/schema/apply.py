"""Make a database match the spec: create what is missing; migrate what differs only if asked.

A missing collection is created with its options (time-series, expireAfterSeconds), its validator
(``validationLevel: strict``, ``validationAction: error``) and every index. An existing collection
that differs is reported; with ``migrate=True`` the differences that have a fix are fixed in place
(``collMod`` for validators and TTLs, index builds). Nothing is ever dropped. Idempotent: a second
run finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from ingestor.errors import StoreError
from ingestor.schema.spec import (
    VALIDATION_ACTION,
    VALIDATION_LEVEL,
    Collection,
    Index,
    by_name,
    realize,
    validator,
)
from ingestor.schema.verify import (
    BuildIndex,
    CollMod,
    Create,
    Drift,
    diff,
    diff_collection,
    inspect,
)

__all__ = ["ApplyReport", "apply", "create_options"]

_NAMESPACE_EXISTS = 48


@dataclass(slots=True)
class ApplyReport:
    """``changes``: what was done; ``pending``: differences left (need --migrate or by hand)."""

    changes: list[str] = field(default_factory=list)
    pending: list[Drift] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not self.pending

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": self.changes,
            "pending": [d.as_dict() for d in self.pending],
            "in_sync": self.in_sync,
        }


def create_options(coll: Collection) -> dict[str, Any]:
    """Options of ``create`` for this collection (the validator only where MongoDB allows one)."""
    opts: dict[str, Any] = {}
    real = realize(coll)
    if coll.timeseries is not None:
        opts["timeseries"] = coll.timeseries.options()
    if real.expire_after_s is not None:
        opts["expireAfterSeconds"] = real.expire_after_s
    rules = validator(coll)
    if rules is not None:
        opts.update(
            validator=rules, validationLevel=VALIDATION_LEVEL, validationAction=VALIDATION_ACTION
        )
    return opts


def _model(ix: Index) -> IndexModel:
    return IndexModel(list(ix.keys), name=ix.name, **ix.options())


async def _create(db: AsyncDatabase[Any], coll: Collection, report: ApplyReport) -> bool:
    """Create the collection and its indexes; False if someone else created it first."""
    try:
        await db.create_collection(coll.name, check_exists=False, **create_options(coll))
    except OperationFailure as exc:
        if exc.code == _NAMESPACE_EXISTS:
            return False
        raise
    indexes = realize(coll).indexes
    if indexes:
        await db[coll.name].create_indexes([_model(ix) for ix in indexes])
    what = f"{len(indexes)} indexes"
    if coll.timeseries is not None:
        what += ", time-series"
    elif validator(coll) is not None:
        what += ", validator"
    report.changes.append(f"created {coll.name} ({what})")
    return True


async def _fix(db: AsyncDatabase[Any], drift: Drift) -> None:
    fix = drift.fix
    if isinstance(fix, CollMod):
        await db.command({"collMod": drift.collection, **fix.body})
    elif isinstance(fix, BuildIndex):
        await db[drift.collection].create_indexes([_model(fix.index)])


async def apply(
    db: AsyncDatabase[Any], names: Iterable[str] | None = None, *, migrate: bool = False
) -> ApplyReport:
    """Bring ``names`` (default: every collection of the spec) in line with the spec."""
    report = ApplyReport()
    try:
        for drift in await diff(db, names):
            if isinstance(drift.fix, Create):
                coll = by_name(drift.collection)
                if not await _create(db, coll, report):  # lost a race: compare what is there
                    live = await inspect(db, [coll.name])
                    report.pending.extend(diff_collection(coll, live[coll.name]))
            elif migrate and drift.fix is not None:
                await _fix(db, drift)
                report.changes.append(
                    f"migrated {drift.collection}: {drift.detail} "
                    f"({drift.fix.describe(drift.collection)})"
                )
            else:
                report.pending.append(drift)
    except PyMongoError as exc:
        raise StoreError(f"schema apply failed: {exc}") from exc
    return report

"""Make a database match the spec: create what is missing; migrate what differs only if asked.

A missing collection is created with its options (time-series, expireAfterSeconds), its validator
(``validationLevel: strict``, ``validationAction: error``) and every index. An existing collection
that differs is reported; with ``migrate=True`` the differences that have a fix are fixed in place
(``collMod`` for validators and TTLs, index builds); with ``heal=True`` only the additive ones
(missing indexes: what the daemon does at every start, so a create whose index build was cut off
is finished by the next start). Nothing is ever dropped. Idempotent: a second run finds nothing
to do.

Races: on MongoDB 7.0+ a ``create`` of an existing collection with the same options succeeds, so
daemons starting together all reach the index build; an identical ``createIndexes`` waits for
the build in progress, and an ``IndexBuildAlreadyInProgress`` leaves the index pending (the
caller verifies again). A step the user may not run (``Unauthorized``) leaves its drift pending
with the reason in ``denied`` instead of failing the whole apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from ingestor.errors import StoreError
from ingestor.retry import classify
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
    KeyPattern,
    diff,
    diff_collection,
    inspect,
)

__all__ = ["ApplyReport", "apply", "create_options"]

_NAMESPACE_EXISTS = 48
_INDEX_BUILD_IN_PROGRESS = 276


@dataclass(slots=True)
class ApplyReport:
    """``changes``: what was done; ``pending``: differences left (need --migrate or by hand)."""

    changes: list[str] = field(default_factory=list)
    pending: list[Drift] = field(default_factory=list)
    #: steps the user may not run (a least-privilege role): ``drift -> reason``
    denied: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not self.pending

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": self.changes,
            "pending": [d.as_dict() for d in self.pending],
            "denied": self.denied,
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
    db: AsyncDatabase[Any],
    names: Iterable[str] | None = None,
    *,
    migrate: bool = False,
    heal: bool = False,
    shard_keys: Mapping[str, KeyPattern] | None = None,
) -> ApplyReport:
    """Bring ``names`` (default: every collection of the spec) in line with the spec.

    ``heal``: build missing indexes (additive only); ``shard_keys``: declared shard-key indexes
    that are not drift (``verify.diff``)."""
    report = ApplyReport()
    try:
        for drift in await diff(db, names, shard_keys=shard_keys):
            try:
                await _apply_one(db, drift, report, migrate=migrate, heal=heal)
            except OperationFailure as exc:
                verdict = classify(exc)
                if exc.code == _INDEX_BUILD_IN_PROGRESS:
                    report.pending.append(drift)  # someone else is building it: verify again
                elif verdict.permanent:
                    report.pending.append(drift)
                    report.denied.append(f"{drift}: {verdict.reason}")
                else:
                    raise
    except PyMongoError as exc:
        raise StoreError(f"schema apply failed: {exc}") from exc
    return report


async def _apply_one(
    db: AsyncDatabase[Any], drift: Drift, report: ApplyReport, *, migrate: bool, heal: bool
) -> None:
    if isinstance(drift.fix, Create):
        coll = by_name(drift.collection)
        if not await _create(db, coll, report):  # lost a race: heal or compare what is there
            live = await inspect(db, [coll.name])
            for left in diff_collection(coll, live[coll.name]):
                await _apply_one(db, left, report, migrate=migrate, heal=heal)
    elif drift.fix is not None and (migrate or (heal and isinstance(drift.fix, BuildIndex))):
        await _fix(db, drift)
        verb = "migrated" if migrate else "healed"
        report.changes.append(
            f"{verb} {drift.collection}: {drift.detail} ({drift.fix.describe(drift.collection)})"
        )
    else:
        report.pending.append(drift)

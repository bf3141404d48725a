"""Compare a live database with the spec: collections, options, every index, validators.

Each difference is a :class:`Drift` carrying the fix ``apply --migrate`` would run, or none when
only a manual migration can reconcile it (a regular collection where the spec wants a time-series
one, an index whose unique/sparse option differs, an index the spec does not list: apply never
drops anything). Time-series collections are recognised by their ``timeseries`` option, not by
``type`` (SecantusDB reports ``collection``; MongoDB ``timeseries``). Ignored as server-made: the
``_id_`` index, and on a time-series collection the ``{meta: 1, time: 1}`` index MongoDB 6.3+
creates by itself, and a shard-key index the operator declared (``mongodb.shard_key`` or
``schema verify --shard-key``): sharding a non-empty collection needs that index first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bson import SON
from pymongo.asynchronous.database import AsyncDatabase

from ingestor.config import KeyPattern
from ingestor.schema.spec import (
    COLLECTIONS,
    VALIDATION_ACTION,
    VALIDATION_LEVEL,
    Collection,
    Index,
    by_name,
    realize,
    validator,
)

__all__ = [
    "BuildIndex",
    "CollMod",
    "Create",
    "Drift",
    "DriftKind",
    "Fix",
    "KeyPattern",
    "Live",
    "diff",
    "diff_collection",
    "inspect",
    "selected",
]

DriftKind = Literal[
    "missing_collection",
    "timeseries",
    "expire_after",
    "validator",
    "missing_index",
    "index_ttl",
    "index_options",
    "extra_index",
]


@dataclass(frozen=True, slots=True)
class Create:
    """Create the collection with its options, validator and indexes."""

    def describe(self, coll: str) -> str:
        return f"create collection {coll}"


@dataclass(frozen=True, slots=True)
class CollMod:
    body: dict[str, Any]

    def describe(self, coll: str) -> str:
        return f"collMod {coll} {sorted(self.body)}"


@dataclass(frozen=True, slots=True)
class BuildIndex:
    index: Index

    def describe(self, coll: str) -> str:
        return f"createIndex {coll} {self.index}"


Fix = Create | CollMod | BuildIndex


@dataclass(frozen=True, slots=True)
class Drift:
    collection: str
    kind: DriftKind
    detail: str
    fix: Fix | None  # None: needs a manual migration

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "kind": self.kind,
            "detail": self.detail,
            "fix": self.fix.describe(self.collection) if self.fix else None,
        }

    def __str__(self) -> str:
        how = f"fix: {self.fix.describe(self.collection)}" if self.fix else "manual migration"
        return f"{self.collection}: {self.detail} ({how})"


@dataclass(frozen=True, slots=True)
class Live:
    """One collection as the server describes it (``None`` options: it does not exist)."""

    options: dict[str, Any] | None
    indexes: list[dict[str, Any]]


def _plain(value: Any) -> Any:
    """SON/dicts -> plain dicts, Int64/float integers -> int, for equality with the spec."""
    if isinstance(value, SON | dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def selected(names: Iterable[str] | None) -> list[Collection]:
    return list(COLLECTIONS) if names is None else [by_name(n) for n in names]


async def inspect(db: AsyncDatabase[Any], names: Iterable[str]) -> dict[str, Live]:
    wanted = list(names)
    cursor = await db.list_collections(filter={"name": {"$in": wanted}})
    infos = {info["name"]: info async for info in cursor}
    out: dict[str, Live] = {}
    for name in wanted:
        info = infos.get(name)
        if info is None:
            out[name] = Live(None, [])
            continue
        indexes = [_plain(ix) async for ix in await db[name].list_indexes()]
        out[name] = Live(_plain(info.get("options", {})), indexes)
    return out


def _key(ix: dict[str, Any]) -> tuple[tuple[str, int | str], ...]:
    keys = ix["key"].items()
    return tuple((k, int(v)) if isinstance(v, int | float) else (k, v) for k, v in keys)


def diff_collection(
    coll: Collection, live: Live, shard_key: KeyPattern | None = None
) -> list[Drift]:
    """Differences between one spec collection and its live state."""
    name = coll.name
    if live.options is None:
        return [Drift(name, "missing_collection", "collection does not exist", Create())]
    out: list[Drift] = []
    opts = live.options
    want = realize(coll)
    ts, live_ts = coll.timeseries, opts.get("timeseries")
    if ts is not None and live_ts is None:
        out.append(
            Drift(
                name,
                "timeseries",
                f"is a regular collection; the spec wants a time-series collection {ts.options()}",
                None,
            )
        )
    elif ts is None and live_ts is not None:
        out.append(
            Drift(
                name,
                "timeseries",
                f"is a time-series collection {live_ts}; the spec wants a regular one",
                None,
            )
        )
    elif ts is not None and live_ts is not None:
        expected = ts.options()
        for k, v in expected.items():
            if live_ts.get(k) != v:
                fix = (
                    CollMod({"timeseries": {"granularity": v}})
                    if k == "granularity" and _coarser(v, live_ts.get(k))
                    else None
                )
                out.append(
                    Drift(
                        name, "timeseries", f"timeseries.{k} is {live_ts.get(k)!r}, spec {v!r}", fix
                    )
                )
    live_expire = opts.get("expireAfterSeconds")
    if live_expire != want.expire_after_s:
        fix = (
            CollMod({"expireAfterSeconds": want.expire_after_s})
            if want.expire_after_s is not None and live_ts is not None
            else None
        )
        out.append(
            Drift(
                name,
                "expire_after",
                f"expireAfterSeconds is {live_expire}, spec {want.expire_after_s}",
                fix,
            )
        )
    out.extend(_diff_validator(coll, opts, live_ts is not None))
    out.extend(_diff_indexes(coll, want.indexes, live.indexes, live_ts, shard_key))
    return out


_GRANULARITY = ("seconds", "minutes", "hours")


def _coarser(new: Any, old: Any) -> bool:
    """MongoDB only lets collMod make a time-series granularity coarser."""
    return (
        old in _GRANULARITY
        and new in _GRANULARITY
        and _GRANULARITY.index(new) > _GRANULARITY.index(old)
    )


def _diff_validator(coll: Collection, opts: dict[str, Any], live_ts: bool) -> list[Drift]:
    want = validator(coll)
    have = opts.get("validator") or None
    level = opts.get("validationLevel", "strict")
    action = opts.get("validationAction", "error")
    name = coll.name
    if want is None:
        if have is not None:
            return [Drift(name, "validator", "has a validator; the spec has none here", None)]
        return []
    fix = (
        None
        if live_ts
        else CollMod(
            {
                "validator": want,
                "validationLevel": VALIDATION_LEVEL,
                "validationAction": VALIDATION_ACTION,
            }
        )
    )
    if have is None:
        return [Drift(name, "validator", "has no validator", fix)]
    if have != _plain(want):
        return [Drift(name, "validator", "validator differs from the spec", fix)]
    if (level, action) != (VALIDATION_LEVEL, VALIDATION_ACTION):
        return [
            Drift(
                name,
                "validator",
                f"validationLevel/Action is {level}/{action}, spec "
                f"{VALIDATION_LEVEL}/{VALIDATION_ACTION}",
                fix,
            )
        ]
    return []


def _diff_indexes(
    coll: Collection,
    want: tuple[Index, ...],
    live: list[dict[str, Any]],
    live_ts: Any,
    shard_key: KeyPattern | None = None,
) -> list[Drift]:
    name = coll.name
    have = {_key(ix): ix for ix in live}
    ignore: set[tuple[tuple[str, int | str], ...]] = {(("_id", 1),)}
    if shard_key:
        ignore.add(tuple(shard_key))
    if live_ts is not None and live_ts.get("metaField"):
        ignore.add(((live_ts["metaField"], 1), (live_ts["timeField"], 1)))
    out: list[Drift] = []
    for ix in want:
        cur = have.get(ix.keys)
        if cur is None:
            out.append(Drift(name, "missing_index", f"missing index {ix}", BuildIndex(ix)))
            continue
        if bool(cur.get("unique")) != ix.unique or bool(cur.get("sparse")) != ix.sparse:
            out.append(
                Drift(
                    name,
                    "index_options",
                    f"index {dict(ix.keys)} is unique="
                    f"{bool(cur.get('unique'))} sparse={bool(cur.get('sparse'))}, spec "
                    f"unique={ix.unique} sparse={ix.sparse}",
                    None,
                )
            )
        ttl = cur.get("expireAfterSeconds")
        if ttl != ix.expire_after_s:
            fix = None
            if ix.expire_after_s is not None and len(ix.keys) == 1:
                fix = CollMod(
                    {
                        "index": {
                            "keyPattern": dict(ix.keys),
                            "expireAfterSeconds": ix.expire_after_s,
                        }
                    }
                )
            out.append(
                Drift(
                    name,
                    "index_ttl",
                    f"index {dict(ix.keys)} has expireAfterSeconds {ttl}, spec {ix.expire_after_s}",
                    fix,
                )
            )
    wanted = {ix.keys for ix in want}
    for key, cur in have.items():
        if key not in wanted and key not in ignore:
            out.append(
                Drift(
                    name,
                    "extra_index",
                    f"index {cur.get('name')} {dict(key)} is not in the spec (apply never drops)",
                    None,
                )
            )
    return out


async def diff(
    db: AsyncDatabase[Any],
    names: Iterable[str] | None = None,
    *,
    shard_keys: Mapping[str, KeyPattern] | None = None,
) -> list[Drift]:
    """Every difference between the live database and the spec (all collections by default);
    ``shard_keys``: collection -> its declared shard-key index, not drift."""
    colls = selected(names)
    live = await inspect(db, [c.name for c in colls])
    keys = shard_keys or {}
    return [d for c in colls for d in diff_collection(c, live[c.name], keys.get(c.name))]

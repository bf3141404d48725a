"""The encoded spec against the spec markdown itself: indexes, fields, rules, retention.

The markdown is outside the repository (``../shared/spec/database-schema.md``; CI has it); a
clone alone reads the repository's copy (``tests/data/spec``), which a test holds equal to it
whenever it is there. Everything else about the schema is tested from ``spec.py`` and the spec's
example documents kept in ``tests/data``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ingestor.schema import spec
from ingestor.schema.spec import COLLECTIONS, T, by_name, realize, validator
from ingestor.validate import Window, check_row
from tests.conftest import SHARED_SPEC_MD, SPEC_COPY_MD, SPEC_MD
from tests.ingestor.schema import specdoc


@pytest.fixture
def spec_md() -> Path:
    assert SPEC_MD.is_file(), f"schema spec markdown missing: {SPEC_MD}"
    return SPEC_MD


def test_the_repositorys_copy_is_the_spec() -> None:
    """What a clone alone reads is the platform's spec, byte for byte."""
    if not SHARED_SPEC_MD.is_file():
        pytest.skip(f"the platform's spec is not beside the clone ({SHARED_SPEC_MD})")
    assert SPEC_COPY_MD.read_bytes() == SHARED_SPEC_MD.read_bytes()


def test_the_kept_examples_are_the_specs(spec_md: Path) -> None:
    """``tests/data/spec-examples.json`` (what the clone-alone tests use) is exactly the
    spec's example documents."""
    from_md = {name: specdoc.examples(sec) for name, sec in specdoc.sections(spec_md).items()}
    assert specdoc.kept_examples() == {k: v for k, v in from_md.items() if v}


def test_every_create_index_line_is_encoded_exactly(spec_md: Path) -> None:
    lines = specdoc.create_indexes(spec_md)
    assert len(lines) == spec_md.read_text().count(".createIndex(")  # the parser missed none
    from_spec: dict[str, set[tuple[Any, ...]]] = {}
    for coll, keys, opts in lines:
        from_spec.setdefault(coll, set()).add(
            (
                keys,
                opts.get("unique", False),
                opts.get("sparse", False),
                opts.get("expireAfterSeconds"),
            )
        )
    for coll, wanted in from_spec.items():
        encoded = {
            (ix.keys, ix.unique, ix.sparse, ix.expire_after_s) for ix in by_name(coll).indexes
        }
        assert encoded == wanted, coll


def test_every_spec_section_is_a_collection_with_its_origin(spec_md: Path) -> None:
    sections = specdoc.sections(spec_md)
    assert len(sections) == 17
    for name, sec in sections.items():
        assert by_name(name).origin == ("spec" if sec.number <= 10 else "brief"), name
    assert [c.name for c in COLLECTIONS if c.origin == "ingestor"] == ["market_data_rejects"]


def _shape(t: T) -> Any:
    if t.fields is not None:
        return {k: _shape(v) for k, v in t.fields.items()}
    base = f"array:{t.items.bson}" if t.items is not None else t.bson
    return (base, t.nullable, t.enum)


def _order(shape: Any) -> Any:
    if isinstance(shape, dict):
        return [(k, _order(v)) for k, v in shape.items()]
    return shape


def test_fields_match_the_typescript_schemas(spec_md: Path) -> None:
    """Names (in order), types, nullability and enum values of sections 1-10."""
    for name, sec in specdoc.sections(spec_md).items():
        if sec.number > 10:
            continue
        parsed = specdoc.typescript_fields(sec)
        encoded = _shape(T("object", fields=by_name(name).fields))
        assert _order(encoded) == _order(parsed), name


def test_every_validation_rule_bullet_is_encoded(spec_md: Path) -> None:
    count = 0
    for name, sec in specdoc.sections(spec_md).items():
        rules = {(r.path, r.text) for r in by_name(name).rules}
        for bullet in specdoc.validation_bullets(sec):
            assert bullet in rules, (name, bullet)
            count += 1
    assert count == 20


_PERIOD_S = {
    "7 days": 7 * 86_400,
    "30 days": 30 * 86_400,
    "90 days": 90 * 86_400,
    "180 days": 180 * 86_400,
    "1 year": 365 * 86_400,
}


def _ttls(name: str) -> set[int]:
    real = realize(by_name(name))
    out = {ix.expire_after_s for ix in real.indexes if ix.expire_after_s is not None}
    return out | ({real.expire_after_s} if real.expire_after_s is not None else set())


def test_retention_table(spec_md: Path) -> None:
    table = specdoc.retention(spec_md)
    assert len(table) == 9
    for name, (period, mechanism) in table.items():
        assert by_name(name).retention.startswith(period), name
        if "TTL index" in mechanism:
            assert _ttls(name) == {_PERIOD_S[period]}, name
        else:
            assert _ttls(name) == set(), name


def test_market_data_is_time_series_with_the_ttl_index_mapped(spec_md: Path) -> None:
    sec = specdoc.sections(spec_md)["market_data"]
    block = next(b for lang, b in sec.fences if lang == "javascript" and "createCollection" in b)
    opts = dict(re.findall(r'(\w+): "?(\w+)"?', block))
    md = by_name("market_data")
    assert md.timeseries is not None
    assert md.timeseries.options() == {
        k: opts[k] for k in ("timeField", "metaField", "granularity")
    }
    real = realize(md)
    assert real.expire_after_s == int(opts["expireAfterSeconds"]) == 7_776_000
    assert all(ix.expire_after_s is None and not ix.unique for ix in real.indexes)
    assert [ix.keys[-1][0] for ix in real.indexes] == ["open_time", "close_time"]
    assert real.notes and "expireAfterSeconds" in real.notes[0]
    assert validator(md) is None  # MongoDB refuses a validator on a time-series collection


def test_a_unique_index_on_a_time_series_collection_is_built_non_unique() -> None:
    md = by_name("market_data")
    odd = spec.Collection(
        "odd",
        "spec",
        md.fields,
        (spec.Index((("symbol", 1),), unique=True),),
        timeseries=md.timeseries,
    )
    real = realize(odd)
    assert real.indexes == (spec.Index((("symbol", 1),)),)
    assert "non-unique" in real.notes[0]


def test_candle_rules_are_enforced_by_the_validator() -> None:
    """The four market_data rules cannot be a validator; ingestor.validate rejects each breach
    (for the decoder's rows and every REST row alike)."""
    example = specdoc.kept_examples()["market_data"][0]
    o, h, lo, c = (
        str(example[f"{k}_price"].to_decimal()) for k in ("open", "high", "low", "close")
    )
    v, q = (str(example[k].to_decimal()) for k in ("volume", "quote_volume"))
    iv = 60_000
    window = Window.live(iv, 10 * iv)

    def check(o: str, h: str, lo: str, c: str, v: str, q: str) -> str | None:
        bad = check_row((iv, o, h, lo, c, v, 2 * iv - 1, q, 1, "0", "0"), window)
        return None if bad is None else bad.detail

    assert check(o, h, lo, c, v, q) is None
    below = str(float(lo) - 1)
    assert check(o, below, lo, c, v, q) == "high < low"
    assert check(str(float(h) + 1), h, lo, c, v, q) == "high < open/close"
    assert check(o, h, lo, below, v, q) == "low > open/close"
    assert check(o, h, lo, c, "-1", q) == "negative volume"
    assert check(o, h, lo, c, v, "-1") == "negative volume"
    for rule in by_name("market_data").rules:
        assert rule.kind == "elsewhere" and "ingestor.validate" in rule.enforced_by


def test_validator_encoding() -> None:
    v = validator(by_name("trades"))
    assert v is not None
    props = v["$jsonSchema"]["properties"]
    assert props["quantity"] == {"bsonType": "decimal"}
    assert props["price"] == {"bsonType": ["decimal", "null"]}
    assert props["user_id"] == {"bsonType": "objectId"}
    assert props["created_at"] == {"bsonType": "date"}
    assert props["pnl_percentage"] == {"bsonType": ["number", "null"], "minimum": -100}
    assert props["status"]["enum"] == [
        "PENDING",
        "FILLED",
        "PARTIALLY_FILLED",
        "CANCELLED",
        "FAILED",
    ]
    assert "price" not in v["$jsonSchema"]["required"]
    assert "quantity" in v["$jsonSchema"]["required"]
    # Decimal128 bounds are $expr comparisons
    assert {"$gt": ["$quantity", 0]} in v["$expr"]["$and"]
    assert {"$gte": ["$fees", 0]} in v["$expr"]["$and"]
    users = validator(by_name("users"))
    assert users is not None
    s = users["$jsonSchema"]["properties"]["settings"]["properties"]
    assert s["max_positions"] == {"bsonType": "number", "minimum": 1, "maximum": 10}
    assert s["default_quantity"] == {"bsonType": "number", "minimum": 0, "exclusiveMinimum": True}
    assert users["$jsonSchema"]["properties"]["password_hash"]["minLength"] == 60
    assert "$expr" not in users


def test_module_exports() -> None:
    import importlib

    for name in ("", ".spec", ".apply", ".verify", ".cli"):
        mod = importlib.import_module(f"ingestor.schema{name}")
        assert all(hasattr(mod, n) for n in mod.__all__), mod.__name__

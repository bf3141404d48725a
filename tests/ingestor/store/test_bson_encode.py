"""The encoder gives PyMongo's bytes for the reference documents, byte for byte, column-wise
(large batches) and row by row (small ones)."""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path
from typing import Any

import bson
import numpy as np
import numpy.typing as npt
import pytest
from bson import Decimal128, ObjectId
from bson.raw_bson import RawBSONDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient

from ingestor.candles import DECIMAL_FIELDS, Candles
from ingestor.enrich import Enricher
from ingestor.store.bson_encode import (
    BsonEncoder,
    ObjectIdSource,
    decimal15_bid,
    decimal15_bid_one,
    decimal128_bid,
    decimal128_bid_one,
    encode_batch,
)
from ingestor.store.documents import decimal15, ms_to_datetime, to_documents
from ingestor.store.schema import MARKET_DATA, ensure_schema
from ingestor.store.writer import CandleStore
from ingestor.streams import StreamKey

CREATED_MS = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z
FILES = (
    "ADABTC-1m-2021-11-27.csv",
    "BTCUSDT-1h-2024-08.csv",
    "ETHUSDT-1h-2021-01.csv",
)


def _reference(candles: Candles, keys: list[StreamKey], oids: npt.NDArray[np.uint8]) -> list[bytes]:
    out = []
    for doc, oid in zip(
        to_documents(candles, keys, ms_to_datetime(CREATED_MS)), oids.tolist(), strict=True
    ):
        doc["_id"] = ObjectId(bytes(oid))
        out.append(bson.encode(doc))
    return out


#: Encoders of each path: column-wise always, row by row always.
PATHS = {"columns": 0, "rows": 1 << 30}


def _assert_exact(candles: Candles, keys: list[StreamKey]) -> list[RawBSONDocument]:
    oids = ObjectIdSource().take(len(candles))
    want = _reference(candles, keys, oids)
    for path, row_wise_max in PATHS.items():
        docs = BsonEncoder(keys, row_wise_max).encode(candles, CREATED_MS, oids)
        assert len(docs) == len(want)
        for i, (d, w) in enumerate(zip(docs, want, strict=True)):
            assert d.raw == w, f"{path}: document {i}: {bson.decode(d.raw)} != {bson.decode(w)}"
    blob, offsets = BsonEncoder(keys).encode_raw(candles, CREATED_MS, oids)
    assert blob == b"".join(want)
    assert offsets.tolist() == np.cumsum([0] + [len(w) for w in want]).tolist()
    return docs


def _csv_rows(path: Path) -> list[list[Any]]:
    with path.open() as f:
        return [
            [int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6]), r[7], int(r[8]), r[9], r[10]]
            for r in csv.reader(f)
            if r and r[0].isdigit()
        ]


def test_real_klines_with_indicators_are_byte_exact(real_data: Path) -> None:
    keys = [StreamKey("ADABTC", "1m"), StreamKey("BTCUSDT", "1h"), StreamKey("ETHUSDT", "1h")]
    rows: list[list[Any]] = []
    sids: list[int] = []
    for sid, name in enumerate(FILES):
        got = _csv_rows(real_data / "binance" / "spot" / name)[:400]
        rows += got
        sids += [sid] * len(got)
    candles = Candles.from_rows(sids, rows)
    Enricher(len(keys)).enrich(candles)
    assert candles.indicators is not None
    nulls = np.isnan(candles.indicators)
    assert nulls.all(axis=1).any() and (~nulls).all(axis=1).any()  # before and after lookback
    assert len({tuple(r) for r in nulls.tolist()}) > 4  # several null patterns: layouts
    docs = _assert_exact(candles, keys)
    first = bson.decode(docs[0].raw)
    assert next(iter(first)) == "_id" and first["symbol"] == "ADABTC"
    # The interleaved order of a live batch: layouts mixed row by row, order kept.
    mixed = candles.take(np.argsort(candles.open_time % 7, kind="stable"))
    _assert_exact(mixed, keys)


def _edge_candles() -> Candles:
    t0 = 1_700_000_000_000
    rows = [
        [t0, "0.00000000", "0", "0.0", "0.00000000", "0", t0 + 59_999, "0", 0, "0", "0"],
        [t0, "1.10000000", "1.10", "1.1", "1.10000000", "1E-8", t0 + 1, "1e-8", 2**31 - 1,
         "0.00000001", "9999999.99999999"],
        [t0, "9999999.99999999", "99999999999999999999.123", "1.5", "2.0", "123456789012.34567890",
         t0 + 2, "18446744073709551616", 2**31, "-0", "0.1234567890123456789"],
        [0, "-1.5", ".5", "5.", "00012.3400", "12345678901234567890", 2**40, "1000000000", -(2**31),
         "-0.00000001", "3"],
        [t0, "7195.24000000", "7196.25000000", "7183.14000000", "7186.68000000", "51.64281200",
         t0 + 59_999, "371233.51835535", 493, "19.59823000", "140888.41428273"],
    ]  # fmt: skip
    c = Candles.from_rows([0, 1, 0, 1, 0], rows)
    ind = np.full((5, 8), np.nan)
    ind[1] = [55.5, -1.25e-9, 0.0, 1e-8, 9999999.99999999, 0.0, -0.0, 1e20]
    ind[2] = [100.0, 1e15, -3.5e-10, 2.85123456789012345e-5, 123456789012345.6, 1e-5, 1e-4, 99.5]
    ind[3, :3] = [0.0, math.inf, -math.inf]
    ind[3, 3:] = [math.inf, -math.inf, 5e-324, 1.7976931348623157e308, 2.0**-22]
    ind[4] = [71.28, 3.3, 2.1, 9.999999999999996, 0.30000000000000004, 1 / 3, 2 / 3, 7190.4]
    c.indicators = ind
    return c


def test_edge_values_are_byte_exact() -> None:
    keys = [StreamKey("BTCUSDT", "1m"), StreamKey("X", "15m")]
    docs = _assert_exact(_edge_candles(), keys)
    d = bson.decode(docs[1].raw)
    assert d["quote_volume"].bid == Decimal128("1e-8").bid
    assert str(d["open_price"]) == "1.10000000"
    assert d["indicators"]["sma_50"] == Decimal128("1E+20")
    assert bson.decode(docs[2].raw)["trades_count"] == 2**31  # int64 from here on, as bson picks
    assert bson.decode(docs[0].raw)["indicators"] == dict.fromkeys(d["indicators"])


def test_malformed_decimal_raises_like_the_reference() -> None:
    c = _edge_candles().take(np.arange(1))
    c.decimals["volume"] = np.array([b"1.2.3"], dtype="S32")
    with pytest.raises(ArithmeticError):
        to_documents(c, [StreamKey("A", "1m")], ms_to_datetime(0))
    for row_wise_max in PATHS.values():
        with pytest.raises(ArithmeticError):
            BsonEncoder([StreamKey("A", "1m")], row_wise_max).encode(c, 0)


def test_decimal_strings() -> None:
    strings = [
        "0", "0.00000000", "1.10000000", "1E-8", "9999999.99999999", "-0", "-0.0", "-1.5", ".5",
        "5.", "00012.3400", "+1", "0.1234567890123456789", "9999999999999999999",
        "12345678901234567890", "99999999999999999999999999999999", "Infinity", "NaN", "1.0e3",
    ]  # fmt: skip
    for odd in (" 1", "1_0", "1.2.3", "-", ".", "", "1\x002", "--1"):
        with pytest.raises(ArithmeticError):
            Decimal128(odd)
        with pytest.raises(ArithmeticError):
            decimal128_bid(np.array([odd.encode()], dtype="S32"))
        with pytest.raises(ArithmeticError):
            decimal128_bid_one(odd.encode())
    rng = np.random.default_rng(7)
    for _ in range(20_000):
        n = int(rng.integers(1, 20))
        digits = "".join(rng.choice(list("0123456789"), n))
        cut = int(rng.integers(0, n + 1))
        s = digits[:cut] + ("." + digits[cut:] if cut < n else "")
        strings.append(("-" if rng.random() < 0.1 else "") + (s or "0"))
    got = decimal128_bid(np.array([s.encode() for s in strings], dtype="S32"))
    for s, b in zip(strings, got, strict=True):
        assert b.tobytes() == Decimal128(s).bid, s
        assert decimal128_bid_one(s.encode()) == Decimal128(s).bid, s
    assert decimal128_bid(np.zeros(0, "S32")).shape == (0, 16)


def _ref15(x: npt.NDArray[np.float64]) -> list[bytes | None]:
    return [None if (d := decimal15(v)) is None else d.bid for v in x.tolist()]


def test_decimal15_matches_format_on_random_and_edge_doubles() -> None:
    rng = np.random.default_rng(11)
    n = 40_000
    c = rng.integers(10**14, 10**15, n).astype(np.float64)
    e = rng.integers(-20, 20, n).astype(np.float64)
    p10 = 10.0 ** np.arange(-300, 300)
    x = np.concatenate(
        [
            rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64),  # any bit pattern
            10.0 ** rng.uniform(-12, 12, n) * rng.choice([-1.0, 1.0], n),
            np.round(rng.uniform(0, 1e5, n), 2),  # prices
            (c + 0.5) * 10.0 ** (e - 14),  # near 15-digit ties
            p10,
            np.nextafter(p10, 0),
            np.nextafter(p10, np.inf),
            np.ldexp(1.0, np.arange(-1074, 1024)),  # exact binary values, exact ties among them
            [0.0, -0.0, math.inf, -math.inf, math.nan, 999999999999999.5, 9.9999999999999995],
        ]
    )
    got = decimal15_bid(x)
    want = _ref15(x)
    bad = [
        (float(v), w)
        for v, g, w in zip(x, got, want, strict=True)
        if w is not None and g.tobytes() != w
    ]
    assert not bad, bad[:5]
    one = [(v, w) for v, w in zip(x.tolist(), want, strict=True) if w is not None]
    bad = [(v, w) for v, w in one if decimal15_bid_one(v) != w]
    assert not bad, bad[:5]


_DECIMAL_TEXT = st.one_of(
    st.from_regex(r"-?[0-9]{1,22}(\.[0-9]{0,12})?", fullmatch=True),
    st.sampled_from(["1E-8", "+1", "Infinity", "-0", ".5", "5.", "1.0e3", "NaN", "0E+3"]),
)
_MALFORMED = st.sampled_from(["1.2.3", "-", "", ".", "1\x002", "1_0", "\xff"])
_INDICATOR = st.one_of(
    st.just(math.nan),
    st.floats(allow_nan=False, width=64),
    st.floats(min_value=1e-6, max_value=1e7),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(-(2**62), 2**62),
            st.lists(_DECIMAL_TEXT, min_size=8, max_size=8),
            st.one_of(
                st.integers(-(2**63), 2**63 - 1),
                st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32]),  # int32's ends
            ),
            st.lists(_INDICATOR, min_size=8, max_size=8),
        ),
        min_size=1,
        max_size=12,
    ),
    st.one_of(st.none(), st.tuples(st.integers(0, 11), st.integers(0, 7), _MALFORMED)),
)
def test_rows_and_columns_give_the_same_bytes_or_the_same_error(
    rows: list[Any], malformed: tuple[int, int, str] | None
) -> None:
    """Any candles: both paths make the same documents, or both raise the same error (one
    malformed decimal string put in)."""
    if malformed is not None:
        row, field, text = malformed
        rows[row % len(rows)][2][field] = text
    keys = [StreamKey("BTCUSDT", "1m"), StreamKey("X", "15m"), StreamKey("ABCDEFGHIJ", "1d")]
    c = Candles(
        stream_id=np.array([r[0] for r in rows], np.int32),
        open_time=np.array([r[1] for r in rows], np.int64),
        close_time=np.array([r[1] + 59_999 for r in rows], np.int64),
        decimals={
            f: np.array([r[2][j].encode() for r in rows], "S32")
            for j, f in enumerate(DECIMAL_FIELDS)
        },
        trades_count=np.array([r[3] for r in rows], np.int64),
        close_f=np.zeros(len(rows)),
        indicators=np.array([r[4] for r in rows], np.float64),
    )
    oids = ObjectIdSource().take(len(c))
    out: list[Any] = []
    for row_wise_max in PATHS.values():
        try:
            out.append([d.raw for d in BsonEncoder(keys, row_wise_max).encode(c, 7, oids)])
        except (ArithmeticError, UnicodeDecodeError) as exc:
            out.append(type(exc))
    assert out[0] == out[1]


def test_object_ids_have_bsons_layout() -> None:
    src = ObjectIdSource()
    a = src.take(3, now_s=1_700_000_000)
    b = src.take(2, now_s=1_700_000_001)
    ids = [ObjectId(bytes(r)) for r in np.concatenate([a, b]).tolist()]
    assert len(set(ids)) == 5
    assert int(ids[0].generation_time.timestamp()) == 1_700_000_000
    assert int(ids[4].generation_time.timestamp()) == 1_700_000_001
    counters = [struct.unpack(">I", b"\0" + r[9:].tobytes())[0] for r in np.concatenate([a, b])]
    assert counters == [(counters[0] + i) & 0xFFFFFF for i in range(5)]
    assert len({r[4:9].tobytes() for r in np.concatenate([a, b])}) == 1  # per-source random
    assert ObjectIdSource().take(1)[0, 4:9].tobytes() != a[0, 4:9].tobytes()
    c = _edge_candles()
    docs = encode_batch(c, [StreamKey("A", "1m"), StreamKey("B", "1m")], CREATED_MS, ids)
    assert [bson.decode(d.raw)["_id"] for d in docs] == ids
    with pytest.raises(ValueError, match="object ids"):
        encode_batch(c, [StreamKey("A", "1m"), StreamKey("B", "1m")], CREATED_MS, ids[:2])


def test_empty_and_unenriched() -> None:
    enc = BsonEncoder([StreamKey("A", "1m")])
    c = Candles.empty()
    c.indicators = np.zeros((0, 8))
    assert enc.encode(c, 0) == []
    blob, offsets = enc.encode_raw(c, 0)
    assert blob == b"" and offsets.tolist() == [0]
    with pytest.raises(ValueError, match="enriched"):
        enc.encode(Candles.empty(), 0)


async def test_store_writes_the_raw_documents(mongo_uri: str, db_name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        db = client[db_name]
        await ensure_schema(db)
        keys = [StreamKey("BTCUSDT", "1m"), StreamKey("X", "15m")]
        c = _edge_candles().take(np.array([0, 1, 4]))
        assert await CandleStore(db, keys).insert(c) == 3
        stored = await db[MARKET_DATA].find({}, sort=[("close_time", 1)]).to_list()
        want = to_documents(c, keys, ms_to_datetime(CREATED_MS))
        want.sort(key=lambda d: d["close_time"])
        assert len(stored) == 3
        for got, ref in zip(stored, want, strict=True):
            assert isinstance(got.pop("_id"), ObjectId)
            assert got.pop("created_at") > ms_to_datetime(CREATED_MS)
            ref.pop("created_at")
            assert got == ref
    finally:
        await client.drop_database(db_name)
        await client.close()

"""The candle rules, in one place: exchange rows -> valid candles + rejects with a reason.

Every kline that reaches the store passes here: REST pages (warm-up, gap fills, late-final
probes, healing, backfill; :func:`check_body`) and the websocket decoder's single rows
(:func:`check_row`: the same rule lines on Python numbers). Nothing raises on bad input: a row
that breaks a rule becomes a :class:`Rejected` (raw text, :class:`ingestor.reasons.Reason`,
detail) for the quarantine.

A row is ``[open_time, open, high, low, close, volume, close_time, quote_volume, trades,
taker_buy_base, taker_buy_quote, ignore]`` (12 columns on REST; the decoder's rows lack the
last). The rules, checked over columns (numpy) whatever the number of rows:

* types: a list of that many columns; open/close time and trades JSON integers in int64
  (``bool`` is not one), >= 0; every other column a string;
* decimals: ASCII ``-?digits[.digits]`` (a leading or trailing ``.`` allowed, at least one
  digit): no NaN, Infinity, exponent, sign ``+``, space or non-ASCII digit; at most
  :data:`MAX_DECIMAL_CHARS` characters (the candle columns hold 32 bytes and Decimal128 34
  digits, so an accepted string is stored exactly; a longer one is rejected, never cut);
* time: open time a multiple of the interval, close time = open time + interval - 1, open time
  inside the caller's range; an open time after ``Window.horizon`` (past the kline still
  forming on the exchange's clock) is rejected (``future_kline``), one after ``closed_until``
  (the still-open kline) is left out without a reject;
* the schema's candle rules: high >= low, high >= open and close, low <= open and close,
  volumes >= 0;
* a page's open times strictly increase (a repeat or an older row is ``out_of_order``).

A REST body over :data:`MAX_BODY_BYTES`, not a JSON list, or with more rows than asked for is
rejected as a whole.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ingestor.candles import DECIMAL_FIELDS, Candles, rest_columns
from ingestor.reasons import Reason

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DECIMAL_CHARS",
    "Checked",
    "Rejected",
    "Window",
    "check_body",
    "check_row",
    "check_rows",
]

#: A ``/klines`` page of 1000 rows is ~200 kB; anything over this is not a klines answer.
MAX_BODY_BYTES = 4 << 20
MAX_DECIMAL_CHARS = 32
_INT64_MAX = (1 << 63) - 1
_INT_COLS = (0, 6, 8)
_DEC_COLS = (1, 2, 3, 4, 5, 7, 9, 10)
_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")


@dataclass(frozen=True, slots=True)
class Window:
    """Which open times a stream's rows may have.

    ``closed_until``: the newest open time of a closed kline (later ones are left out, not
    rejected: the kline still forming); ``horizon``: newer than this is a reject
    (``future_kline``). ``first``/``last``: the range asked for (outside: ``out_of_range``).
    """

    interval_ms: int
    closed_until: int
    horizon: int
    first: int = 0
    last: int = _INT64_MAX

    @classmethod
    def rest(cls, interval_ms: int, closed_before_ms: int, now_ms: int, **rng: int) -> Window:
        """For REST rows: closed when the close time is before ``closed_before_ms``; anything
        opening more than one interval after ``now_ms`` is from the future."""
        iv = interval_ms
        return cls(iv, closed_before_ms - iv, now_ms + iv, **rng)

    @classmethod
    def live(cls, interval_ms: int, now_ms: int) -> Window:
        """For websocket rows (closed or forming): at most one interval ahead of the clock."""
        return cls(interval_ms, now_ms + interval_ms, now_ms + interval_ms)


@dataclass(frozen=True, slots=True)
class Rejected:
    raw: str
    reason: str
    detail: str


@dataclass(slots=True)
class Checked:
    """The valid candles (input order), the rejects, how many rows came and how many were
    left out as still open."""

    candles: Candles
    rejected: list[Rejected] = field(default_factory=list)
    rows: int = 0
    still_open: int = 0


def check_body(
    body: bytes, stream_id: int, window: Window, *, limit: int, source: str = "binance"
) -> Checked:
    """Check one ``GET /klines`` body of at most ``limit`` rows."""
    empty = Candles.empty()
    if len(body) > MAX_BODY_BYTES:
        raw = body[:200].decode("utf-8", "replace")
        return Checked(empty, [Rejected(raw, Reason.BODY_TOO_LARGE, f"{len(body)} bytes")])
    cols = rest_columns(body)
    if cols is not None:
        ints, dec = cols
        candles = Candles.from_columns(ints, dec, stream_id, source)
        if len(candles) > limit:
            return _too_many(body, len(candles), limit)
        return _check_columns(candles, window, None)
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raw = body[:4096].decode("utf-8", "replace")
        return Checked(empty, [Rejected(raw, Reason.MALFORMED_JSON, str(exc))])
    if not isinstance(rows, list):
        raw = body[:4096].decode("utf-8", "replace")
        return Checked(empty, [Rejected(raw, Reason.MALFORMED_JSON, "not a list of rows")])
    if len(rows) > limit:
        return _too_many(body, len(rows), limit)
    return check_rows(rows, stream_id, window, source=source)


def _too_many(body: bytes, n: int, limit: int) -> Checked:
    raw = body[:4096].decode("utf-8", "replace")
    return Checked(Candles.empty(), [Rejected(raw, Reason.TOO_MANY_ROWS, f"{n} rows > {limit}")], n)


def check_rows(
    rows: list[Any], stream_id: int, window: Window, *, width: int = 12, source: str = "binance"
) -> Checked:
    """Check parsed rows of ``width`` columns (12 on REST, 11 from the decoder)."""
    good: list[Any] = []
    good_at: list[int] = []
    rejected: list[tuple[int, Rejected]] = []
    for i, row in enumerate(rows):
        problem = _row_type(row, width)
        if problem is None:
            good.append(row)
            good_at.append(i)
        else:
            rejected.append((i, Rejected(_raw(row), *problem)))
    candles = Candles.from_rows([stream_id] * len(good), good, source)
    out, at = _judge(candles, window, good)
    rejected += [(good_at[j], r) for j, r in zip(at, out.rejected, strict=True)]
    out.rejected = [r for _, r in sorted(rejected, key=lambda ir: ir[0])]  # input order
    out.rows = len(rows)
    return out


def _raw(row: object) -> str:
    try:
        return orjson.dumps(row).decode()[:4096]
    except TypeError:
        return repr(row)[:4096]


def _row_type(row: object, width: int) -> tuple[str, str] | None:
    """Why ``row`` cannot be a kline row at all (its shape and types), or None."""
    if not isinstance(row, list | tuple):
        return Reason.BAD_TYPE, f"row is {type(row).__name__}, not a list"
    if len(row) != width:
        return Reason.BAD_TYPE, f"{len(row)} columns, not {width}"
    for i in _INT_COLS:
        v = row[i]
        if type(v) is not int:
            return Reason.BAD_TYPE, f"column {i} is {type(v).__name__}, not an integer"
        if not 0 <= v <= _INT64_MAX:
            return Reason.BAD_TYPE, f"column {i} out of range: {v}"
    for i in range(width):
        if i in _INT_COLS:
            continue
        v = row[i]
        if i not in _DEC_COLS:
            if type(v) is not str:
                return Reason.BAD_TYPE, f"column {i} is {type(v).__name__}, not a string"
        elif not (
            type(v) is str and v.isascii() and len(v) <= MAX_DECIMAL_CHARS and _DECIMAL.fullmatch(v)
        ):
            return Reason.BAD_DECIMAL, f"column {i}={str(v)[:60]!r}"
    return None


def _decimal_ok(col: npt.NDArray[np.bytes_]) -> npt.NDArray[np.bool_]:
    """``-?digits[.digits]`` per string of an ``S32`` column (vectorized)."""
    n = col.shape[0]
    b = np.frombuffer(col.tobytes(), np.uint8).reshape(n, MAX_DECIMAL_CHARS)
    nz = b != 0
    length = nz.sum(axis=1)
    pos = np.arange(MAX_DECIMAL_CHARS)
    ok = (nz == (pos < length[:, None])).all(axis=1)  # no NUL inside the string
    digit = (b >= 48) & (b <= 57)
    dot = b == 46
    minus = b == 45
    ok &= ~(minus[:, 1:]).any(axis=1)  # '-' only first
    ok &= ((digit | dot | minus) == nz).all(axis=1)
    ok &= dot.sum(axis=1) <= 1
    ok &= digit.any(axis=1)
    return np.asarray(ok, dtype=bool)


def _rule_checks(
    t: Any, ct: Any, o: Any, h: Any, lo: Any, cl: Any, vmin: Any, w: Window
) -> tuple[tuple[int, Any], ...]:
    """(code, broken?) of each time and candle rule, in order of precedence. Written with
    operators only, so the same lines judge one row (Python numbers) or columns (numpy)."""
    iv = w.interval_ms
    return (
        (2, t % iv != 0),
        (3, ct != t + iv - 1),
        (4, t > w.horizon),
        (5, (t < w.first) | (t > w.last)),
        (6, (h < lo) | (h < o) | (h < cl) | (lo > o) | (lo > cl) | (vmin < 0)),
    )


#: A kline row's eight decimals joined by NUL, each of at most MAX_DECIMAL_CHARS ``_DECIMAL``
#: characters (``[0-9]`` is ASCII only): one match instead of eight for a well-formed row.
_EIGHT_DECIMALS = re.compile(
    "\x00".join([rf"(?=[^\x00]{{1,{MAX_DECIMAL_CHARS}}}(?:\x00|\Z))" + _DECIMAL.pattern] * 8)
)


_ints_of = operator.itemgetter(*_INT_COLS)
_decimals_of = operator.itemgetter(*_DEC_COLS)


def _well_typed(row: Any) -> bool:
    """Whether an 11-column row has the right types everywhere (one quick pass; on False,
    :func:`_row_type` says why)."""
    if (type(row) is not tuple and type(row) is not list) or len(row) != 11:
        return False
    t, ct, n = _ints_of(row)
    if type(t) is not int or type(ct) is not int or type(n) is not int:
        return False
    if not (0 <= t <= _INT64_MAX and 0 <= ct <= _INT64_MAX and 0 <= n <= _INT64_MAX):
        return False
    try:
        joined = "\x00".join(_decimals_of(row))
    except TypeError:  # not all strings
        return False
    return _EIGHT_DECIMALS.fullmatch(joined) is not None


def check_row(row: Any, window: Window, *, width: int = 11) -> Rejected | None:
    """One row (the decoder's: ``width`` 11) against the same rules as :func:`check_rows`,
    without numpy's per-call overhead; None when it is a valid kline."""
    if width != 11 or not _well_typed(row):
        problem = _row_type(row, width)
        if problem is not None:
            return Rejected(_raw(row), *problem)
    o, h, lo, cl, *vols = map(float, _decimals_of(row))
    for code, broken in _rule_checks(row[0], row[6], o, h, lo, cl, min(vols), window):
        if broken:
            detail = _rule_detail(o, h, lo, cl) if code == 6 else _time_detail(row[0], row[6], code)
            return Rejected(_raw(row), _RULES[code - 1], detail)
    return None


def _check_columns(c: Candles, w: Window, rows: list[Any] | None) -> Checked:
    """The rules over ``c``'s columns; ``rows`` (when given) are ``c``'s rows for the rejects'
    raw text."""
    return _judge(c, w, rows)[0]


def _judge(c: Candles, w: Window, rows: list[Any] | None) -> tuple[Checked, list[int]]:
    """:func:`_check_columns`, and the index in ``c`` of each reject (in order)."""
    n = len(c)
    if n == 0:
        return Checked(c, [], 0), []
    dec = np.stack([c.decimals[f] for f in DECIMAL_FIELDS]).astype(f"S{MAX_DECIMAL_CHARS}")
    dec_ok = _decimal_ok(dec.ravel()).reshape(dec.shape)
    row_ok = dec_ok.all(axis=0)
    detail_dec = np.argmin(dec_ok, axis=0)  # the first bad field of a bad row
    # float views (rows with a bad decimal read as 0): DECIMAL_FIELDS order
    o, h, lo, cl, *vols = np.where(row_ok, dec, b"0").astype(np.float64)
    checks = _rule_checks(c.open_time, c.close_time, o, h, lo, cl, np.min(vols, axis=0), w)
    reason = np.select([~row_ok, *(b for _, b in checks)], [1, *(k for k, _ in checks)], 0).astype(
        np.int8
    )
    t = c.open_time
    # strictly increasing open times among the rows that pass everything else
    ok = reason == 0
    if ok.sum() > 1:
        tv = np.where(ok, t, np.iinfo(np.int64).min)
        before = np.maximum.accumulate(np.r_[np.iinfo(np.int64).min, tv[:-1]])
        reason[ok & (t <= before)] = 7
    ok = reason == 0
    pending = ok & (t > w.closed_until)
    keep = ok & ~pending
    rejected: list[Rejected] = []
    at: list[int] = np.flatnonzero(reason).tolist()
    for i in at:
        code = int(reason[i])
        raw = _raw(rows[i]) if rows is not None else _raw(_row_of(c, i))
        if code == 1:
            f = DECIMAL_FIELDS[int(detail_dec[i])]
            detail = f"{f}={c.decimals[f][i].decode('ascii', 'replace')!r}"
        elif code == 6:
            detail = _rule_detail(float(o[i]), float(h[i]), float(lo[i]), float(cl[i]))
        else:
            detail = _time_detail(int(t[i]), int(c.close_time[i]), code)
        rejected.append(Rejected(raw, _RULES[code - 1], detail))
    valid = c if keep.all() else c.take(keep)
    valid.close_f = cl[keep]
    return Checked(valid, rejected, n, int(pending.sum())), at


_RULES = (
    Reason.BAD_DECIMAL,
    Reason.MISALIGNED,
    Reason.BAD_CLOSE_TIME,
    Reason.FUTURE_KLINE,
    Reason.OUT_OF_RANGE,
    Reason.RULE_VIOLATION,
    Reason.OUT_OF_ORDER,
)


def _row_of(c: Candles, i: int) -> list[Any]:
    d = {f: c.decimals[f][i].decode("ascii", "replace") for f in DECIMAL_FIELDS}
    return [
        int(c.open_time[i]),
        *(d[f] for f in DECIMAL_FIELDS[:5]),
        int(c.close_time[i]),
        d["quote_volume"],
        int(c.trades_count[i]),
        d["taker_buy_base_volume"],
        d["taker_buy_quote_volume"],
    ]


def _time_detail(t: int, ct: int, code: int) -> str:
    if code == 3:
        return f"close_time {ct} != open_time {t} + interval - 1"
    return f"open_time {t}"


def _rule_detail(o: float, h: float, lo: float, cl: float) -> str:
    """Which candle rule a row broke (the first, as ``_rule_checks`` orders them)."""
    if h < lo:
        return "high < low"
    if h < o or h < cl:
        return "high < open/close"
    if lo > o or lo > cl:
        return "low > open/close"
    return "negative volume"

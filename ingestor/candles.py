"""Candles as columns: the unit that flows from decode to store.

Prices and volumes stay the exchange's own decimal strings (ASCII bytes, numpy ``S`` arrays):
they become Decimal128 without ever passing through a float. ``close_f`` is the float view of
the close, used only by the indicator math.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from indicators import OUTPUT_FIELDS

__all__ = ["DECIMAL_FIELDS", "INDICATOR_FIELDS", "Candles", "DecimalColumn", "rest_columns"]

DecimalColumn = npt.NDArray[np.bytes_]

#: Decimal fields of a kline, in the order of Binance's REST rows / kline payload keys.
DECIMAL_FIELDS: tuple[str, ...] = (
    "open_price",
    "high_price",
    "low_price",
    "close_price",
    "volume",
    "quote_volume",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)

#: Indicator columns of ``Candles.indicators`` (float64, NaN before each lookback), in order:
#: the order ``indicators.Bank.update`` returns them in.
INDICATOR_FIELDS: tuple[str, ...] = OUTPUT_FIELDS

_S = "S32"
_WIDTH = 32  # bytes of an ``S32`` decimal string

# The REST klines body's layout: rows of 12 fields, these unquoted integers, the rest strings.
_ROW = 12
_INT_COLS = (0, 6, 8)
_DEC_COLS = (1, 2, 3, 4, 5, 7, 9, 10)  # DECIMAL_FIELDS' columns
_STR_COLS = (*_DEC_COLS, 11)  # 11: "ignore", a string ("0"), unused
_INT_DIGITS = 18  # at most 18 digits: fits int64 whatever they are
#: The bytes a compact klines body holds (any other: not the fast path).
_BODY_BYTES = b'0123456789.-",[]'


def _frozen[T: np.generic](a: npt.NDArray[T]) -> npt.NDArray[T]:
    a.flags.writeable = False
    return a


#: _PREFIX[k]: 1 on the first k of 32 bytes, 0 after.
_PREFIX = _frozen((np.arange(_WIDTH)[None, :] < np.arange(_WIDTH + 1)[:, None]).astype(np.uint8))
#: _SUFFIX[k]: 1 on the last k of 18 bytes, 0 before.
_SUFFIX = _frozen(
    (np.arange(_INT_DIGITS)[None, :] >= _INT_DIGITS - np.arange(_INT_DIGITS + 1)[:, None]).astype(
        np.uint8
    )
)
_POW10 = _frozen(10 ** np.arange(_INT_DIGITS - 1, -1, -1, dtype=np.int64))


@dataclass(slots=True)
class Candles:
    """N closed klines of any streams, one numpy array per field."""

    stream_id: npt.NDArray[np.int32]
    open_time: npt.NDArray[np.int64]  # ms since epoch, UTC
    close_time: npt.NDArray[np.int64]  # ms since epoch, UTC
    decimals: dict[str, DecimalColumn]  # DECIMAL_FIELDS -> S32 arrays of decimal strings
    trades_count: npt.NDArray[np.int64]
    close_f: npt.NDArray[np.float64]
    indicators: npt.NDArray[np.float64] | None = None  # shape (N, 8) in INDICATOR_FIELDS order
    source: str = "binance"

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    @classmethod
    def empty(cls) -> Candles:
        return cls.from_rows([], [])

    @classmethod
    def from_rows(
        cls,
        stream_ids: list[int],
        rows: list[list[object]] | list[tuple[object, ...]],
        source: str = "binance",
    ) -> Candles:
        """Build from REST-style rows [t, o, h, l, c, v, T, q, n, V, Q, ...] (decimals as str)."""
        n = len(rows)
        if n == 0:
            return cls(
                stream_id=np.zeros(0, np.int32),
                open_time=np.zeros(0, np.int64),
                close_time=np.zeros(0, np.int64),
                decimals={f: np.zeros(0, _S) for f in DECIMAL_FIELDS},
                trades_count=np.zeros(0, np.int64),
                close_f=np.zeros(0, np.float64),
                source=source,
            )
        cols = list(zip(*rows, strict=False))
        # one conversion for the eight decimal columns and one for the three integer ones
        # (rows of the result: contiguous views), not eleven
        dec = np.array([cols[i] for i in _DEC_COLS], dtype=_S)
        ints = np.array([cols[i] for i in _INT_COLS], dtype=np.int64)
        decimals = dict(zip(DECIMAL_FIELDS, dec, strict=True))
        return cls(
            stream_id=np.asarray(stream_ids, dtype=np.int32),
            open_time=ints[0],
            close_time=ints[1],
            decimals=decimals,
            trades_count=ints[2],
            close_f=decimals["close_price"].astype(np.float64),
            source=source,
        )

    @classmethod
    def from_rest_json(cls, body: bytes, stream_id: int, source: str = "binance") -> Candles:
        """Build from a ``GET /api/v3/klines`` body, as ``from_rows(orjson.loads(body))``.

        A compact body (what Binance and the simulator send) is cut into columns with numpy,
        no Python object per field: ~10x less CPU per 1000-row page than orjson's lists plus
        ``from_rows``. Any other JSON takes that reference path. Raises ``ValueError`` when the
        body is not a JSON list (``orjson.JSONDecodeError`` is one).
        """
        cols = rest_columns(body)
        if cols is None:
            rows = orjson.loads(body)
            if not isinstance(rows, list):
                raise ValueError(f"klines body is not a JSON list: {body[:100]!r}")
            return cls.from_rows([stream_id] * len(rows), rows, source)
        out = cls.from_columns(*cols, stream_id, source)
        out.close_f = out.decimals["close_price"].astype(np.float64)
        return out

    @classmethod
    def from_columns(
        cls,
        ints: npt.NDArray[np.int64],
        dec: npt.NDArray[np.bytes_],
        stream_id: int,
        source: str = "binance",
    ) -> Candles:
        """From :func:`rest_columns`' arrays, the strings unchecked: ``close_f`` is left 0
        (``ingestor.validate`` fills it once the strings are known to be decimals)."""
        n = ints.shape[1]
        return cls(
            stream_id=np.full(n, stream_id, dtype=np.int32),
            open_time=ints[0],
            close_time=ints[1],
            decimals={f: dec[i] for i, f in enumerate(DECIMAL_FIELDS)},
            trades_count=ints[2],
            close_f=np.zeros(n),
            source=source,
        )

    def rows(self) -> list[tuple[object, ...]]:
        """REST-style rows ``(t, o, h, l, c, v, T, q, n, V, Q)``, decimals as ``str``."""
        d = {f: [s.decode() for s in self.decimals[f].tolist()] for f in DECIMAL_FIELDS}
        return list(
            zip(
                self.open_time.tolist(),
                d["open_price"],
                d["high_price"],
                d["low_price"],
                d["close_price"],
                d["volume"],
                self.close_time.tolist(),
                d["quote_volume"],
                self.trades_count.tolist(),
                d["taker_buy_base_volume"],
                d["taker_buy_quote_volume"],
                strict=True,
            )
        )

    def take(self, idx: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Candles:
        """The subset at ``idx`` (indices or a boolean mask), in that order."""
        return Candles(
            stream_id=self.stream_id[idx],
            open_time=self.open_time[idx],
            close_time=self.close_time[idx],
            decimals={k: v[idx] for k, v in self.decimals.items()},
            trades_count=self.trades_count[idx],
            close_f=self.close_f[idx],
            indicators=None if self.indicators is None else self.indicators[idx],
            source=self.source,
        )

    @classmethod
    def concat(cls, parts: list[Candles]) -> Candles:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        ind = None
        if all(p.indicators is not None for p in parts):
            ind = np.concatenate([p.indicators for p in parts if p.indicators is not None])
        return cls(
            stream_id=np.concatenate([p.stream_id for p in parts]),
            open_time=np.concatenate([p.open_time for p in parts]),
            close_time=np.concatenate([p.close_time for p in parts]),
            decimals={
                f: np.concatenate([p.decimals[f] for p in parts]).astype(_S) for f in DECIMAL_FIELDS
            },
            trades_count=np.concatenate([p.trades_count for p in parts]),
            close_f=np.concatenate([p.close_f for p in parts]),
            indicators=ind,
            source=parts[0].source,
        )


def rest_columns(
    body: bytes,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bytes_]] | None:
    """Integer columns (3 x N: open time, close time, trades) and decimal strings (8 x N,
    ``DECIMAL_FIELDS`` order) of a compact klines body; None when it is not exactly
    ``[[int,"dec",...],...]``: 12 fields a row, integers of 1 to 18 digits, the rest strings,
    decimals of at most 32 bytes (the caller then parses it the reference way)."""
    size = len(body)
    if size < 2 or body.translate(None, _BODY_BYTES):
        return None  # a byte no compact body of numbers and decimal strings has
    b = np.frombuffer(body, np.uint8)
    seps = np.flatnonzero((b == 44) | (b == 91) | (b == 93))  # , [ ]
    n, rest = divmod(seps.shape[0] - 1, _ROW + 2)  # 2 outer brackets, 14 a row less a comma
    if rest or n < 1:
        return None  # not rows of 12 (an empty list too: the reference path has it)
    row = b"[" + b"," * (_ROW - 1) + b"]"
    if b[seps].tobytes() != b"[" + b",".join([row] * n) + b"]":
        return None
    flat = np.empty(n * (_ROW + 2), np.int64)  # a row's [ , x11 ] and the comma after it
    flat[:-1] = seps[1:-1]
    flat[-1] = size  # stands for the last row's missing comma
    r = flat.reshape(n, _ROW + 2)
    # nothing outside the brackets, nor between a row's ] and the next [ but the comma
    if seps[0] != 0 or seps[-1] != size - 1 or r[0, 0] != 1 or r[-1, _ROW] != size - 2:
        return None
    if n > 1 and not (
        (r[:-1, _ROW + 1] == r[:-1, _ROW] + 1).all() and (r[1:, 0] == r[:-1, _ROW + 1] + 1).all()
    ):
        return None
    start = r[:, :_ROW] + 1
    end = r[:, 1 : _ROW + 1]  # exclusive
    # strings: quoted; no other quote, so the integer fields hold digits, '.' and '-' only
    qs, qe = start[:, _STR_COLS], end[:, _STR_COLS]
    if body.count(b'"') != 2 * qs.size:
        return None
    if (qe - qs < 2).any() or not ((b[qs] == 34).all() and (b[qe - 1] == 34).all()):
        return None
    # every field's 32 bytes from its start (and the 18 up to its end) as rows of a strided
    # view: a row gather, not one per byte
    padded = np.zeros(_INT_DIGITS + size + _WIDTH, np.uint8)
    padded[_INT_DIGITS : _INT_DIGITS + size] = b
    windows = np.lib.stride_tricks.as_strided(
        padded, (_INT_DIGITS + size, _WIDTH), (1, 1), writeable=False
    )
    ds = start[:, _DEC_COLS].T.ravel() + 1  # (8 * n,): column by column, inside the quotes
    length = end[:, _DEC_COLS].T.ravel() - ds - 1
    if (length > _WIDTH).any():
        return None
    chars = windows[ds + _INT_DIGITS]
    chars *= _PREFIX[length]  # NULs after the string, as numpy's S32 pads
    dec = chars.view(_S).reshape(len(_DEC_COLS), n)
    # integers: 1 to 18 digits, right-aligned, times their place values
    ie = end[:, _INT_COLS].T.ravel()
    ilen = ie - start[:, _INT_COLS].T.ravel()
    if (ilen < 1).any() or (ilen > _INT_DIGITS).any():
        return None
    digits = windows[ie, :_INT_DIGITS] - np.uint8(48)  # ends at the field's end
    digits *= _SUFFIX[ilen]
    if (digits > 9).any():  # a '.' or '-' (wrapped below 0)
        return None
    ints = (digits.astype(np.int64) @ _POW10).reshape(len(_INT_COLS), n)
    return ints, np.asarray(dec)

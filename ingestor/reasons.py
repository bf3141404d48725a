"""Every reason input is rejected for, in one table.

A reason is a stable code: the ``reason`` label of ``ingestor_rejects`` and
``ingestor_markprice_rejects`` on ``/metrics`` and the ``reason`` field of a
``market_data_rejects`` document. Producers (the kline and mark-price decoders, the candle rules
of :mod:`ingestor.validate`, the gate's sequencer) raise or return a :class:`Reason`; it is a
``str``, so counters and documents hold the plain code. Each member carries its meaning.

(Positions the refresh skips as malformed have their own reasons, built per field in
:mod:`ingestor.positions.pipeline`: they are stored documents, not rejected input.)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Reason"]


class Reason(StrEnum):
    """A reject's code (its value) and what it means (``meaning``)."""

    meaning: str

    def __new__(cls, code: str, meaning: str) -> Reason:
        member = str.__new__(cls, code)
        member._value_ = code
        member.meaning = meaning
        return member

    # -- the frame (kline and mark-price decoders) --------------------------------------------
    MALFORMED_JSON = "malformed_json", "not JSON, or a REST body that is not a list of rows"
    NOT_AN_OBJECT = "not_an_object", "a frame that is JSON but not an object"
    MISSING_FIELD = "missing_field", "an event without a field it must have"
    BAD_TYPE = "bad_type", "a field (or event type, or row) of the wrong type or shape"
    BAD_FIELD = "bad_field", "a mark price or event time that is not a positive number"
    UNKNOWN_STREAM = "unknown_stream", "a kline of a symbol and interval not configured"
    STREAM_MISMATCH = "stream_mismatch", "the envelope's stream name is not the event's"
    UNDECODABLE = "undecodable", "a frame that failed in an unforeseen way"
    # -- the candle rules (ingestor.validate) -------------------------------------------------
    BODY_TOO_LARGE = "body_too_large", "a REST body over validate.MAX_BODY_BYTES"
    TOO_MANY_ROWS = "too_many_rows", "a REST page with more rows than asked for"
    BAD_DECIMAL = "bad_decimal", "a price or volume not a plain decimal of at most 32 chars"
    MISALIGNED = "misaligned", "an open time that is not a multiple of the interval"
    BAD_CLOSE_TIME = "bad_close_time", "a close time other than open time + interval - 1"
    OUT_OF_RANGE = "out_of_range", "a REST row outside the range asked for"
    FUTURE_KLINE = "future_kline", "an open time past the kline forming on the exchange's clock"
    RULE_VIOLATION = "rule_violation", "high below low, open or close; low above; volume < 0"
    # -- the sequence (a page's rows, the gate's live klines) --------------------------------
    OUT_OF_ORDER = "out_of_order", "an open time older than the stream's (or page's) last"
    DUPLICATE = "duplicate", "the stream's last kline again"

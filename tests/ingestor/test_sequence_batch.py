"""Watermarks and size-or-linger batching, driven by an explicit clock."""

from __future__ import annotations

from ingestor.batch import Batcher
from ingestor.decode import ClosedKline
from ingestor.sequence import Sequencer, VerdictKind

M = 60_000


def test_sequencer_accepts_in_order_and_flags_the_rest() -> None:
    seq = Sequencer([M])
    assert seq.check(0, 10 * M).kind is VerdictKind.ACCEPT  # nothing known yet
    seq.set_watermark(0, 10 * M)
    assert seq.check(0, 11 * M).kind is VerdictKind.ACCEPT
    seq.advance(0, 11 * M)
    assert seq.check(0, 11 * M).kind is VerdictKind.DUPLICATE
    assert seq.check(0, 5 * M).kind is VerdictKind.OUT_OF_ORDER
    # a misaligned open time never gets here: tests/ingestor/test_decode.py (the validator)
    gap = seq.check(0, 15 * M)
    assert gap.kind is VerdictKind.GAP and gap.gap_start == 12 * M


def _row(i: int) -> ClosedKline:
    return ClosedKline(0, (i * M, "1", "2", "0.5", "1.5", "3", i * M + M - 1, "4", 7, "1", "2"))


def test_batcher_flushes_at_size() -> None:
    b = Batcher(max_batch=3, linger_s=10)
    assert b.add(_row(0), now=0.0) is None
    assert b.add(_row(1), now=0.1) is None
    full = b.add(_row(2), now=0.2)
    assert full is not None and len(full) == 3 and len(b) == 0
    assert full.open_time.tolist() == [0, M, 2 * M]
    assert full.decimals["close_price"].tolist() == [b"1.5"] * 3
    assert b.deadline() is None


def test_batcher_linger_counts_from_first_candle() -> None:
    b = Batcher(max_batch=100, linger_s=0.25)
    b.add(_row(0), now=5.0)
    b.add(_row(1), now=5.2)
    assert b.deadline() == 5.25
    assert not b.due(5.24)
    assert b.due(5.25)
    out = b.flush()
    assert out is not None and len(out) == 2
    assert b.flush() is None


def _kline(sid: int, open_ms: int, iv: int) -> ClosedKline:
    return ClosedKline(
        sid, (open_ms, "1", "2", "0.5", "1.5", "3", open_ms + iv - 1, "4", 7, "1", "2")
    )


def test_batcher_is_complete_once_every_stream_closing_then_is_in() -> None:
    """Streams 0, 1: 1m; stream 2: 5m. At a 5-minute boundary three klines close, at any other
    minute two: the batch is complete when they are all in, whatever the order."""
    b = Batcher(max_batch=100, linger_s=10, intervals=[M, M, 5 * M])
    b.add(_kline(2, 0, 5 * M), now=0.0)  # closes at 5M
    assert not b.complete()
    b.add(_kline(0, 4 * M, M), now=0.0)
    assert not b.complete()
    b.add(_kline(1, 4 * M, M), now=0.0)
    assert b.complete()
    assert len(b.flush() or []) == 3 and not b.complete()
    b.add(_kline(1, 5 * M, M), now=1.0)  # closes at 6M: two streams
    assert not b.complete()
    b.add(_kline(0, 5 * M, M), now=1.0)
    assert b.complete()


def test_batcher_with_an_older_close_time_waits_for_the_linger() -> None:
    """A kline of an earlier close time (a REST fill) whose other streams are not in keeps the
    batch open although the newer close time is complete: the linger decides."""
    b = Batcher(max_batch=100, linger_s=0.04, intervals=[M, M])
    b.add(_kline(0, 0, M), now=0.0)  # close time M: stream 1's kline of it never comes
    b.add(_kline(0, M, M), now=0.0)
    b.add(_kline(1, M, M), now=0.0)  # close time 2M complete
    assert not b.complete()
    assert b.deadline() == 0.04


def test_batcher_without_intervals_is_never_complete_early() -> None:
    b = Batcher(max_batch=100, linger_s=0.04)
    b.add(_kline(0, 0, M), now=0.0)
    assert not b.complete()
    assert not Batcher(max_batch=1, linger_s=0, intervals=[M]).complete()  # empty

"""The journal keeps batches across a crash, in order, and survives being torn anywhere."""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ingestor.candles import DECIMAL_FIELDS, Candles
from ingestor.errors import JournalError
from ingestor.metrics import Metrics
from ingestor.state import PipelineState
from ingestor.store import journal as journal_module
from ingestor.store.journal import Journal

M = 60_000
NAMES = ["BTCUSDT:1m", "ETHUSDT:1m"]


def _batch(first: int, n: int, sid: int = 1) -> Candles:
    rows = [
        [
            (first + i) * M,
            "1.10",
            "1.20",
            "1.00",
            "1.15",
            "5",
            (first + i) * M + M - 1,
            "5.5",
            i,
            "2",
            "2.2",
        ]
        for i in range(n)
    ]
    c = Candles.from_rows([sid] * n, rows)
    c.indicators = np.arange(n * 8, dtype=np.float64).reshape(n, 8)
    c.indicators[0, 0] = np.nan
    return c


def _written(directory: Path, *batches: Candles) -> Journal:
    j = Journal(directory, NAMES)
    for b in batches:
        j.append(b)
    j.flush()
    return j


def _record(batch: Candles) -> bytes:
    """The bytes one append of ``batch`` adds to a journal."""
    with tempfile.TemporaryDirectory() as tmp:
        j = _written(Path(tmp), batch)
        data = j.path.read_bytes()
        j.close()
    return data


def _replay(j: Journal) -> list[list[int]]:
    """Open times of every record, in order, consuming them."""
    out = []
    while (c := j.peek()) is not None:
        out.append(c.open_time.tolist())
        j.consume()
    return out


def _aside(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ".damaged-" in p.name)


def test_records_come_back_in_order_and_exact(tmp_path: Path) -> None:
    j = _written(tmp_path, _batch(0, 3), _batch(3, 2))
    j.close()
    again = Journal(tmp_path, NAMES)  # as after a restart
    assert len(again) == 2 and again.written == 2
    first = again.peek()
    assert first is not None
    assert first.open_time.tolist() == [0, M, 2 * M]
    assert first.decimals["close_price"].tolist() == [b"1.15"] * 3
    assert first.stream_id.tolist() == [1, 1, 1] and first.trades_count.tolist() == [0, 1, 2]
    assert first.close_f.tolist() == [1.15] * 3 and first.source == "binance"
    assert first.indicators is not None and np.isnan(first.indicators[0, 0])
    assert first.indicators[1].tolist() == list(range(8, 16))
    again.consume()
    second = again.peek()
    assert second is not None and second.open_time.tolist() == [3 * M, 4 * M]
    again.consume()
    assert again.peek() is None and len(again) == 0
    again.close()
    assert not again.path.exists()
    assert _aside(tmp_path) == []


def test_a_batch_without_indicators_and_of_many_streams(tmp_path: Path) -> None:
    c = Candles.concat([_batch(0, 2, sid=1), _batch(0, 1, sid=0)])
    c.indicators = None
    _written(tmp_path, c, Candles.empty()).close()
    got = _replay(again := Journal(tmp_path, NAMES))
    assert got == [[0, M, 0], []]
    again.close()


def test_torn_tail_is_set_aside_and_counted(tmp_path: Path) -> None:
    j = _written(tmp_path, _batch(0, 2), _batch(2, 2))
    j.close()
    data = j.path.read_bytes()
    j.path.write_bytes(data[:-7])  # crash in the middle of the second append
    again = Journal(tmp_path, NAMES)
    first_len = len(_record(_batch(0, 2)))
    assert again.damaged_bytes == len(data) - 7 - first_len and again.damaged_regions == 1
    assert _aside(tmp_path) == [again.set_aside]
    assert again.set_aside is not None and again.set_aside.read_bytes() == data[:-7]
    assert again.path.read_bytes() == data[:first_len]
    assert _replay(again) == [[0, M]]
    # Published on /metrics (the service copies the journal's counts into its state).
    state = PipelineState(2)
    state.journal_damaged_bytes = again.damaged_bytes
    state.journal_damaged_regions = again.damaged_regions
    metrics = Metrics()
    metrics.state = state
    samples = {
        s.name: s.value
        for fam in text_string_to_metric_families(metrics.render().decode())
        for s in fam.samples
    }
    assert samples["ingestor_journal_damaged_bytes_total"] == again.damaged_bytes
    assert samples["ingestor_journal_damaged_regions_total"] == 1
    again.close()


def test_a_corrupt_middle_record_does_not_hide_the_records_after_it(tmp_path: Path) -> None:
    j = _written(tmp_path, _batch(0, 2), _batch(2, 3), _batch(5, 1))
    j.close()
    data = bytearray(j.path.read_bytes())
    a, b = len(_record(_batch(0, 2))), len(_record(_batch(2, 3)))
    data[a + b // 2] ^= 0x40  # a flipped bit inside the second record's payload
    j.path.write_bytes(bytes(data))
    again = Journal(tmp_path, NAMES)
    assert again.damaged_bytes == b and again.damaged_regions == 1
    assert _replay(again) == [[0, M], [5 * M]]
    again.append(_batch(6, 1))
    again.close()
    # The rewritten journal is clean: nothing is set aside twice, nothing replayed twice.
    third = Journal(tmp_path, NAMES)
    assert third.damaged_bytes == 0 and len(_aside(tmp_path)) == 1
    assert _replay(third) == [[6 * M]]
    third.close()


def _tear_and_check(directory: Path, cut: int, garbage: bytes, then_intact: bool) -> None:
    """A, B durable; the append of C cut after ``cut`` bytes, ``garbage`` after it (a sector
    of junk, a reused block); optionally an intact record E after the damage."""
    directory.mkdir()
    torn = _record(_batch(10, 1))[:cut] + garbage
    j = _written(directory, _batch(0, 2), _batch(2, 1))
    j.close()
    with open(j.path, "ab") as f:
        f.write(torn)
        if then_intact:
            f.write(_record(_batch(20, 2)))
    again = Journal(directory, NAMES)
    expected = [[0, M], [2 * M]] + ([[20 * M, 21 * M]] if then_intact else [])
    assert again.damaged_bytes == len(torn)
    assert len(_aside(directory)) == (1 if torn else 0)
    assert _replay(again) == expected
    # Appends after the restart go after the intact records, never after damage.
    again.append(_batch(30, 1))
    again.close()
    third = Journal(directory, NAMES)
    assert third.damaged_bytes == 0
    assert _replay(third) == [[30 * M]]
    third.close()
    assert not third.path.exists()


def test_a_torn_append_at_every_byte_offset(tmp_path: Path) -> None:
    size = len(_record(_batch(10, 1)))
    for cut in range(size):
        _tear_and_check(tmp_path / f"cut{cut}", cut, b"", then_intact=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(0, len(_record(_batch(10, 1))) - 1),
    garbage=st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=40).map(lambda b: b"IJR2" + b),  # junk that starts like a record
    ),
    then_intact=st.booleans(),
)
def test_a_torn_append_with_garbage_anywhere(cut: int, garbage: bytes, then_intact: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _tear_and_check(Path(tmp) / "j", cut, garbage, then_intact)


_THREE = [_record(_batch(0, 2)), _record(_batch(2, 1)), _record(_batch(3, 3))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(
        st.tuples(st.integers(0, sum(map(len, _THREE)) - 1), st.integers(1, 255)), max_size=4
    ),
    junk=st.binary(max_size=64),
)
def test_any_damage_keeps_the_intact_records_in_order(
    flips: list[tuple[int, int]], junk: bytes
) -> None:
    data = bytearray(b"".join(_THREE))
    for at, mask in flips:
        data[at] ^= mask
    data[len(data) // 2 : len(data) // 2] = junk
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "market_data.journal").write_bytes(bytes(data))
        j = Journal(d, NAMES)
        got = _replay(j)
        j.close()
    whole = [[0, M], [2 * M], [3 * M, 4 * M, 5 * M]]
    assert got == [r for r in whole if r in got]  # a subsequence: in order, none twice
    if not flips and not junk:
        assert got == whole


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_as_a_journal_never_crash(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "market_data.journal").write_bytes(data)
        j = Journal(d, NAMES)
        assert _replay(j) == [] and j.damaged_bytes == len(data)
        j.close()


def test_torn_first_record(tmp_path: Path) -> None:
    record = _record(_batch(0, 3))
    (tmp_path / "market_data.journal").write_bytes(record[:30])
    j = Journal(tmp_path, NAMES)
    assert len(j) == 0 and j.damaged_bytes == 30
    j.append(_batch(3, 1))
    j.flush()
    assert _replay(j) == [[3 * M]]
    j.close()


def test_consume_with_nothing_written_is_an_error(tmp_path: Path) -> None:
    j = Journal(tmp_path, NAMES)
    with pytest.raises(JournalError, match="no written record"):
        j.consume()
    j.append(_batch(0, 1))
    assert len(j) == 1 and j.written == 0 and j.peek() is None
    with pytest.raises(JournalError, match="1 waiting for a write"):
        j.consume()
    assert j.flush() == 1
    j.consume()
    with pytest.raises(JournalError):
        j.consume()
    j.close()


def test_streams_are_recorded_by_name_not_position(tmp_path: Path) -> None:
    _written(tmp_path, _batch(0, 2)).close()  # stream id 1 = ETHUSDT:1m here
    reordered = Journal(tmp_path, ["SOLUSDT:1m", "ETHUSDT:1m", "BTCUSDT:1m"])
    got = reordered.peek()
    assert got is not None and got.stream_id.tolist() == [1, 1]
    reordered.close()
    other_shard = Journal(tmp_path, ["BTCUSDT:1m"])  # ETHUSDT moved to another replica
    dropped = other_shard.peek()
    assert dropped is not None and len(dropped) == 0
    other_shard.close()


#: The calls that write, sync or move the journal file.
_DISK = ("pwritev", "fdatasync", "fsync", "ftruncate")


def _spy(monkeypatch: pytest.MonkeyPatch, calls: list[str], *names: str) -> None:
    """Record in ``calls`` every call of these ``os`` functions, which still do their work."""
    for name in names:
        real = getattr(os, name)

        def spy(*args: Any, _name: str = name, _real: Any = real, **kw: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kw)

        monkeypatch.setattr(os, name, spy)


def test_group_commit_one_write_one_fdatasync_file_kept_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = Journal(tmp_path, NAMES)
    size = len(_record(_batch(9, 1)))
    calls: list[str] = []
    _spy(monkeypatch, calls, "open", "write", "pwrite", *_DISK)
    for i in range(5):
        j.append(_batch(i, 2))
    assert calls == []  # appending only encodes
    assert j.flush() == 5
    assert calls == ["pwritev", "fdatasync"]
    calls.clear()
    for _ in range(5):
        j.consume()
    assert calls == ["pwrite"] * 5  # each a 4-byte mark, not synced
    calls.clear()
    j.append(_batch(9, 1))
    j.flush()
    assert calls == ["pwritev", "fdatasync"]
    monkeypatch.undo()
    assert _replay(j) == [[9 * M]]
    j.close()
    assert not j.path.exists()
    assert size > 0


def test_write_hands_records_out_unsynced_and_a_flush_syncs_only_what_is_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = Journal(tmp_path, NAMES)
    calls: list[str] = []
    _spy(monkeypatch, calls, *_DISK)
    for i in range(3):
        j.append(_batch(i, 1))
    assert j.write() == 3 and calls == ["pwritev"]  # one write, no sync
    assert j.pending == 0 and j.written == 3 and j.unsynced == 3 and j.written_seq == 3
    first = j.peek()  # handed out before any sync
    assert first is not None and first.open_time.tolist() == [0]
    j.consume()
    assert j.unsynced == 2 and j.syncs == 0
    calls.clear()
    assert j.flush() == 0 and calls == ["fdatasync"]  # nothing to write: only the sync
    assert j.unsynced == 0 and j.syncs == 1
    calls.clear()
    assert j.flush() == 0 and calls == []  # everything durable: nothing to do
    j.append(_batch(3, 1))
    assert j.write() == 1
    assert _replay(j) == [[M], [2 * M], [3 * M]]
    assert j.unsynced == 0 and j.flush() == 0 and calls == ["pwritev"]  # stored: no sync
    monkeypatch.undo()
    j.append(_batch(4, 1))
    j.write()
    crashed = Journal(tmp_path, NAMES)  # written, never synced: still in the file (kill -9)
    assert crashed.unsynced == 0 and _replay(crashed) == [[4 * M]]
    crashed.close()
    j.close()


def test_write_leaves_records_to_the_flush_when_the_file_is_due_to_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "RECLAIM_BYTES", 1)
    j = _written(tmp_path, _batch(0, 3))
    assert _replay(j) == [[0, M, 2 * M]]  # all consumed, the file past RECLAIM_BYTES
    calls: list[str] = []
    _spy(monkeypatch, calls, *_DISK)
    j.append(_batch(3, 1))
    assert j.write() == 0 and j.pending == 1 and calls == []  # no truncation on the loop
    assert j.flush() == 1 and calls == ["ftruncate", "pwritev", "fdatasync"]
    monkeypatch.undo()
    assert j.path.stat().st_size == len(_record(_batch(3, 1)))
    assert _replay(j) == [[3 * M]]
    j.close()


def test_write_while_a_flush_moves_the_file_leaves_records_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "RECLAIM_BYTES", 1)
    j = _written(tmp_path, _batch(0, 1))
    j.consume()
    j.append(_batch(1, 1))
    entered, release = threading.Event(), threading.Event()
    real = os.ftruncate

    def slow_ftruncate(fd: int, length: int) -> None:
        entered.set()
        assert release.wait(30)
        real(fd, length)

    monkeypatch.setattr(os, "ftruncate", slow_ftruncate)
    flusher = threading.Thread(target=j.flush)
    flusher.start()
    assert entered.wait(30)
    j.append(_batch(2, 1))
    assert j.write() == 0 and j.pending == 1  # the flush holds the file: no wait, no write
    release.set()
    flusher.join(30)
    assert j.written == 1 and j.write() == 1
    assert _replay(j) == [[M], [2 * M]]
    j.close()


def test_consumed_records_are_not_replayed_after_a_crash(tmp_path: Path) -> None:
    j = _written(tmp_path, _batch(0, 1), _batch(1, 1), _batch(2, 1))
    j.consume()
    j.consume()
    crashed = Journal(tmp_path, NAMES)  # the first one never closed: as after kill -9
    assert crashed.damaged_bytes == 0 and len(crashed) == 1
    assert _replay(crashed) == [[2 * M]]
    crashed.close()
    j.close()


def test_a_fully_consumed_journal_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "RECLAIM_BYTES", 1)
    j = _written(tmp_path, _batch(0, 3), _batch(3, 3))
    j.consume()
    j.append(_batch(6, 1))
    j.flush()  # one record not consumed yet: appended after it
    size = j.path.stat().st_size
    assert _replay(j) == [[3 * M, 4 * M, 5 * M], [6 * M]]
    j.append(_batch(7, 1))
    j.flush()  # everything consumed: written at 0 over a truncated file
    assert j.path.stat().st_size == len(_record(_batch(7, 1))) < size
    again = Journal(tmp_path, NAMES)
    assert _replay(again) == [[7 * M]] and again.damaged_bytes == 0
    again.close()
    j.close()


def test_a_journal_never_fully_consumed_is_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "RECLAIM_BYTES", 1)
    j = _written(tmp_path, _batch(0, 3), _batch(3, 1))
    j.consume()  # 3 candles' record stored, the next one not: never empty
    dir_syncs = []
    real = os.fsync

    def fsync(fd: int) -> None:
        dir_syncs.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    j.append(_batch(4, 1))
    j.flush()
    assert dir_syncs == [True]  # the rename of the compacted file
    assert j.path.stat().st_size == 2 * len(_record(_batch(4, 1)))
    assert not (tmp_path / "market_data.journal.tmp").exists()
    crashed = Journal(tmp_path, NAMES)
    assert crashed.damaged_bytes == 0 and _replay(crashed) == [[3 * M], [4 * M]]
    crashed.close()
    assert _replay(j) == [[3 * M], [4 * M]]
    j.close()


def test_directory_fsynced_after_create_rename_and_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dir_syncs: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            assert os.fstat(fd).st_ino == tmp_path.stat().st_ino
            dir_syncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    j = Journal(tmp_path, NAMES)  # create
    assert len(dir_syncs) == 1
    j.append(_batch(0, 1))
    j.flush()
    j.close()  # a record left: kept, nothing deleted
    assert len(dir_syncs) == 1
    with open(j.path, "ab") as f:
        f.write(b"IJR2 torn")
    again = Journal(tmp_path, NAMES)  # set aside: a link and a rename
    assert len(dir_syncs) == 2
    assert _replay(again) == [[0]]
    again.close()  # everything stored: deleted
    assert len(dir_syncs) == 3 and not again.path.exists()


def test_a_failed_write_fails_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path, NAMES)
    j.append(_batch(0, 1))

    def full(fd: int, data: Any, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", full)
    with pytest.raises(JournalError, match="No space left"):
        j.flush()
    monkeypatch.undo()
    with pytest.raises(JournalError, match="failed earlier"):
        j.append(_batch(1, 1))
    assert j.peek() is None
    j.close()


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwritev

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        return real(fd, [bytes(buffers[0][:7])], offset)  # the kernel may write less

    j = Journal(tmp_path, NAMES)
    for i in range(3):
        j.append(_batch(i, 1))
    monkeypatch.setattr(os, "pwritev", short)
    assert j.flush() == 3
    monkeypatch.undo()
    j.close()
    again = Journal(tmp_path, NAMES)
    assert again.damaged_bytes == 0 and _replay(again) == [[0], [M], [2 * M]]
    again.close()


def _v1_record(c: Candles, names: list[str]) -> bytes:
    """A record of the format before this one (an .npz per batch), as it wrote them."""
    arrays: dict[str, Any] = {
        "stream": np.array([names[i] for i in c.stream_id.tolist()], dtype="S32"),
        "open_time": c.open_time,
        "close_time": c.close_time,
        "trades_count": c.trades_count,
        "close_f": c.close_f,
        "source": np.array([c.source.encode()]),
    }
    arrays.update({f"d_{f}": c.decimals[f] for f in DECIMAL_FIELDS})
    if c.indicators is not None:
        arrays["indicators"] = c.indicators
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    payload = buf.getvalue()
    return struct.pack("<4sII", b"IJR1", len(payload), zlib.crc32(payload)) + payload


def test_records_of_the_previous_format_are_converted_at_upgrade(tmp_path: Path) -> None:
    first, second = _batch(0, 2), _batch(2, 3)
    second.indicators = None
    data = _v1_record(first, NAMES) + _v1_record(second, NAMES)
    (tmp_path / "market_data.journal").write_bytes(data + _v1_record(_batch(5, 1), NAMES)[:-3])
    j = Journal(tmp_path, NAMES)
    assert j.damaged_regions == 1 and j.damaged_bytes == len(_v1_record(_batch(5, 1), NAMES)) - 3
    assert j.path.read_bytes()[:4] == b"IJR2"
    got = j.peek()
    assert got is not None and got.open_time.tolist() == first.open_time.tolist()
    assert got.decimals["close_price"].tolist() == [b"1.15"] * 2
    assert got.indicators is not None and got.indicators[1].tolist() == list(range(8, 16))
    j.consume()
    got = j.peek()
    assert got is not None and got.indicators is None and got.stream_id.tolist() == [1] * 3
    j.consume()
    j.close()
    (tmp_path / "market_data.journal").write_bytes(data)  # intact: converted, nothing aside
    again = Journal(tmp_path, NAMES)
    assert again.damaged_bytes == 0 and _replay(again) == [[0, M], [2 * M, 3 * M, 4 * M]]
    again.close()

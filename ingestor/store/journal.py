"""Write-ahead journal of batches the database has not acknowledged yet.

One file, kept open, of records::

    magic "IJR2" | payload length u32 | candles u32 | flags u16 | names u16 | payload crc32 u32
    | header crc32 u32 (of the 16 bytes after the magic) | payload

The payload is the batch's columns as raw little-endian bytes: the stream names it holds and its
source (length-prefixed, padded to 8), then open time, close time, trades, float close,
indicators (flag bit 0), the eight decimal columns (``S32``) and each candle's index into the
names. Streams go by name, not by this process's ids: a restart with another symbol list or
shard must not replay candles under the wrong stream.

Cheap per batch: :meth:`Journal.append` only encodes (one copy of the columns);
:meth:`Journal.write` writes every record appended since with one ``os.pwritev`` into the page
cache, and the records can then be handed out (:meth:`peek`); :meth:`Journal.flush` writes
what is still pending and makes everything written durable with one ``fdatasync`` (group
commit). ``flush`` may run in a worker thread while the event loop keeps appending and
writing; ``write`` never waits on the disk: while a flush moves the file (truncation,
compaction) it leaves the records pending for the next flush. :meth:`consume` overwrites the
record's magic with ``IJR0`` (no sync of its own: should a crash lose the mark, the record is
replayed and the writer finds it stored), so a restart replays only what was not stored. Who
calls ``flush`` when is :mod:`ingestor.store.spool`'s choice.

Torn anywhere: at open, every record whose header and payload checksums hold is kept, in order,
even after a damaged stretch (the scan resynchronises on the next magic); if anything is damaged
the original file is kept beside the journal as ``market_data.journal.damaged-<ns>`` for
diagnosis, the intact records are rewritten to a fresh journal (temp file, fsync, rename), the
damage is logged once and counted (:attr:`Journal.damaged_bytes`, on /metrics). The directory is
fsync'd after every create, rename or delete. A fully consumed journal past
``RECLAIM_BYTES`` is truncated before the next write, and removed at :meth:`close`.
"""

from __future__ import annotations

import io
import logging
import mmap
import os
import shutil
import struct
import threading
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from ingestor.candles import DECIMAL_FIELDS, Candles
from ingestor.errors import JournalError

__all__ = ["Journal"]

log = logging.getLogger(__name__)

_MAGIC = b"IJR2"
_DONE = b"IJR0"  # the magic of a consumed record
#: The format before: ``"IJR1" | length u32 | crc32 u32 | an .npz of the columns``. Records of
#: it found at open are converted, so an upgrade loses nothing a journal held.
_V1 = b"IJR1"
_V1_HEAD = struct.Struct("<4sII")
_PRE = struct.Struct("<4sIIHHI")  # magic, payload length, candles, flags, names, payload crc
_CRC = struct.Struct("<I")
HEADER_SIZE = _PRE.size + _CRC.size
_HAS_INDICATORS = 1
_N_IND = 8
_DEC = "S32"
_DEC_WIDTH = 32
#: Bytes per candle of the fixed-width columns (without and with indicators).
_ROW = 4 * 8 + len(DECIMAL_FIELDS) * _DEC_WIDTH + 2
_NAME = "market_data.journal"
#: A fully consumed journal at least this big starts over at offset 0 (a smaller one grows on:
#: a truncation costs more than a write).
RECLAIM_BYTES = 4 << 20


def _fsync_dir(directory: Path) -> None:
    """Make a create, rename or delete in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, buffers: list[bytearray] | list[bytes], offset: int) -> None:
    """``buffers`` one after another from ``offset``: one ``pwritev`` (no joined copy) unless
    the kernel writes less."""
    views = [memoryview(b) for b in buffers]
    while views:
        done = os.pwritev(fd, views[:1024], offset)  # IOV_MAX
        offset += done
        while views and done >= len(views[0]):
            done -= len(views.pop(0))
        if views and done:
            views[0] = views[0][done:]


def _stream_index(ids: npt.NDArray[np.int32]) -> tuple[list[int], npt.NDArray[np.uint16]]:
    """The distinct stream ids, sorted, and each candle's position among them."""
    if len(ids) <= 256:  # numpy's unique + searchsorted cost ~15 us even on 10 candles
        listed = ids.tolist()
        uniq = sorted(set(listed))
        pos = {s: i for i, s in enumerate(uniq)}
        return uniq, np.array([pos[s] for s in listed], dtype="<u2")
    u = np.unique(ids)
    return u.tolist(), np.searchsorted(u, ids).astype("<u2")


def _prefixed(name: str) -> bytes:
    """``name`` as the names block holds it: a length byte, then its UTF-8 bytes."""
    b = name.encode()
    if len(b) > 255:
        raise JournalError(f"name too long for a journal record: {name[:40]!r}...")
    return bytes((len(b),)) + b


def _encode(c: Candles, names: list[bytes]) -> bytearray:
    """One record (header and payload) of ``c``: one copy of its columns. ``names``: each
    stream's name as :func:`_prefixed` makes it."""
    n = len(c)
    uniq, index = _stream_index(c.stream_id)
    if len(uniq) > 0xFFFF:
        raise JournalError(f"a batch of {len(uniq)} streams does not fit a journal record")
    block = bytearray().join([*(names[i] for i in uniq), _prefixed(c.source)])
    block += bytes(-len(block) % 8)
    parts: list[Any] = [
        bytes(HEADER_SIZE),
        block,
        np.ascontiguousarray(c.open_time, dtype="<i8"),
        np.ascontiguousarray(c.close_time, dtype="<i8"),
        np.ascontiguousarray(c.trades_count, dtype="<i8"),
        np.ascontiguousarray(c.close_f, dtype="<f8"),
    ]
    flags = 0
    if c.indicators is not None:
        flags |= _HAS_INDICATORS
        parts.append(np.ascontiguousarray(c.indicators, dtype="<f8"))
    parts.extend(np.ascontiguousarray(c.decimals[f], dtype=_DEC) for f in DECIMAL_FIELDS)
    parts.append(index)
    record = bytearray().join(parts)  # the one copy; the header is filled in place
    with memoryview(record) as view:
        crc = zlib.crc32(view[HEADER_SIZE:])
        _PRE.pack_into(record, 0, _MAGIC, len(record) - HEADER_SIZE, n, flags, len(uniq), crc)
        _CRC.pack_into(record, _PRE.size, zlib.crc32(view[4 : _PRE.size]))
    return record


def _names_block(payload: memoryview, count: int) -> tuple[list[bytes], int] | None:
    """The ``count`` length-prefixed names at the payload's start and the padded block length."""
    out: list[bytes] = []
    pos = 0
    for _ in range(count):
        if pos >= len(payload):
            return None
        size = payload[pos]
        if pos + 1 + size > len(payload):
            return None
        out.append(bytes(payload[pos + 1 : pos + 1 + size]))
        pos += 1 + size
    return out, pos + (-pos % 8)


def _record_length(buf: bytes | mmap.mmap, pos: int) -> int | None:
    """Length of the intact record (consumed or not) at ``pos`` of ``buf``, or None."""
    end = len(buf)
    if buf[pos : pos + 4] == _V1 and end - pos >= _V1_HEAD.size:
        _, v1_length, v1_crc = _V1_HEAD.unpack_from(buf, pos)
        start = pos + _V1_HEAD.size
        if v1_length > end - start or zlib.crc32(buf[start : start + v1_length]) != v1_crc:
            return None
        return _V1_HEAD.size + int(v1_length)
    if end - pos < HEADER_SIZE or buf[pos : pos + 4] not in (_MAGIC, _DONE):
        return None
    pre = buf[pos : pos + _PRE.size]
    (head_crc,) = _CRC.unpack_from(buf, pos + _PRE.size)
    if zlib.crc32(pre[4:]) != head_crc:
        return None
    _, length, n, flags, n_names, crc = _PRE.unpack(pre)
    start = pos + HEADER_SIZE
    if length > end - start or flags & ~_HAS_INDICATORS:
        return None
    payload = memoryview(buf)[start : start + length]
    try:
        if zlib.crc32(payload) != crc:
            return None
        block = _names_block(payload, n_names + 1)
        row = _ROW + (_N_IND * 8 if flags & _HAS_INDICATORS else 0)
        if block is None or block[1] + n * row != length:
            return None
        index = np.frombuffer(payload, dtype="<u2", count=n, offset=length - 2 * n)
        names_ok = not n or int(index.max()) < n_names
        del index  # before the release: it borrows the payload's buffer
    finally:
        payload.release()
    return HEADER_SIZE + int(length) if names_ok else None


def _decode(record: bytes, ids: dict[bytes, int]) -> Candles:
    """Candles of an intact record (checked by :func:`_record_length`); streams this daemon does
    not own are dropped (logged): their owner refills them from the exchange."""
    _, length, n, flags, n_names, _ = _PRE.unpack_from(record)
    payload = memoryview(record)[HEADER_SIZE : HEADER_SIZE + length]
    block = _names_block(payload, n_names + 1)
    assert block is not None
    names, pos = block
    source = names.pop().decode()

    def take(dtype: str, count: int) -> npt.NDArray[Any]:
        nonlocal pos
        a = np.frombuffer(payload, dtype=dtype, count=count, offset=pos)
        pos += a.nbytes
        return a

    open_time = take("<i8", n).astype(np.int64)
    close_time = take("<i8", n).astype(np.int64)
    trades = take("<i8", n).astype(np.int64)
    close_f = take("<f8", n).astype(np.float64)
    indicators = None
    if flags & _HAS_INDICATORS:
        indicators = take("<f8", n * _N_IND).astype(np.float64).reshape(n, _N_IND)
    decimals = {f: take(_DEC, n) for f in DECIMAL_FIELDS}
    index = take("<u2", n)
    own = np.array([ids.get(s, -1) for s in names], dtype=np.int32)
    unknown = sorted(s.decode() for s, i in zip(names, own.tolist(), strict=True) if i < 0)
    if unknown:
        log.error(
            "journal: dropping candles of streams this daemon does not own (%s); "
            "their owner refills them from the exchange",
            ", ".join(unknown[:5]),
        )
    c = Candles(
        stream_id=own[index] if len(own) else np.zeros(0, np.int32),
        open_time=open_time,
        close_time=close_time,
        decimals=decimals,
        trades_count=trades,
        close_f=close_f,
        indicators=indicators,
        source=source,
    )
    return c.take(c.stream_id >= 0) if unknown else c


def _next_magic(buf: bytes | mmap.mmap, pos: int) -> int:
    found = [i for i in (buf.find(m, pos) for m in (_MAGIC, _DONE, _V1)) if i >= 0]
    return min(found) if found else len(buf)


def _decode_v1(payload: bytes, ids: dict[bytes, int]) -> Candles:
    """Candles of a record of the previous format (an .npz, no pickles)."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        streams = z["stream"].tolist()
        return Candles(
            stream_id=np.array([ids.get(s, -1) for s in streams], dtype=np.int32),
            open_time=z["open_time"],
            close_time=z["close_time"],
            decimals={f: z[f"d_{f}"].astype(_DEC) for f in DECIMAL_FIELDS},
            trades_count=z["trades_count"],
            close_f=z["close_f"],
            indicators=z["indicators"] if "indicators" in z.files else None,
            source=bytes(z["source"][0]).decode(),
        )


def _scan(
    buf: bytes | mmap.mmap,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
    """(offset, length) of every intact record not consumed, (start, end) of every damaged
    stretch, and the number of intact consumed records."""
    records: list[tuple[int, int]] = []
    consumed = 0
    damaged: list[tuple[int, int]] = []
    bad: int | None = None
    pos, size = 0, len(buf)
    while pos < size:
        length = _record_length(buf, pos)
        if length is not None:
            if bad is not None:
                damaged.append((bad, pos))
                bad = None
            if buf[pos : pos + 4] != _DONE:
                records.append((pos, length))
            else:
                consumed += 1
            pos += length
            continue
        if bad is None:
            bad = pos
        pos = _next_magic(buf, pos + 1)
    if bad is not None:
        damaged.append((bad, size))
    return records, damaged, consumed


class Journal:
    """The journal file under ``directory``; see the module docstring for its guarantees.

    ``append``, ``write``, ``peek``, ``consume`` and ``close`` belong to the event loop's
    thread; ``flush`` may run in one worker thread at a time beside them.
    """

    def __init__(self, directory: Path, stream_names: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / _NAME
        self._names = [_prefixed(n) for n in stream_names]
        self._ids = {n.encode(): i for i, n in enumerate(stream_names)}
        #: Bytes and stretches of damage set aside at open (published on /metrics).
        self.damaged_bytes = 0
        self.damaged_regions = 0
        self.set_aside: Path | None = None
        self._lock = threading.Lock()  # the state below, between the loop and a flush
        self._flushing = threading.Lock()  # one flush at a time
        self._writing = threading.Lock()  # the file's end and layout (a write, an upkeep)
        self._written: deque[tuple[int, int]] = deque()  # (offset, length), not consumed
        self._pending: list[bytearray] = []  # appended, not yet written
        self._end = 0  # bytes in the file
        self._failed: BaseException | None = None
        self._fd = self._open()
        self.head_seq = 0  # sequence number of the oldest unconsumed record
        self._next_seq = len(self._written)  # appends number on from the records found
        self._synced_seq = self._next_seq  # records before it are durable (found: on disk)
        #: fdatasync calls of flushes (published on /metrics).
        self.syncs = 0

    # -- open and recovery ---------------------------------------------------------------------

    def _open(self) -> int:
        tmp = self.path.with_name(_NAME + ".tmp")
        if tmp.exists():  # a rewrite a crash interrupted; the journal itself is intact
            tmp.unlink()
            _fsync_dir(self.directory)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            _fsync_dir(self.directory)
            return fd
        # No O_APPEND: Linux's pwrite would ignore the offset of a consumed mark.
        fd = os.open(self.path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if not size:
                return fd
            with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as buf:
                records, damaged, consumed = _scan(buf)
                v1 = [r for r in records if buf[r[0] : r[0] + 4] == _V1]
                if not damaged and not v1:
                    self._written.extend(records)
                    self._end = size
                    log.info(
                        "journal %s: %d records to replay, %d stored ones skipped",
                        self.path,
                        len(records),
                        consumed,
                    )
                    return fd
                self._rewrite(buf, records, damaged)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return os.open(self.path, os.O_RDWR)

    def _rewrite(
        self, buf: Any, records: list[tuple[int, int]], damaged: list[tuple[int, int]]
    ) -> None:
        """Rewrite the intact records (previous-format ones converted) as the journal; keep a
        damaged original beside it for diagnosis."""
        tmp = self.path.with_name(_NAME + ".tmp")
        converted = 0
        with open(tmp, "wb") as f:
            for off, length in records:
                record: bytes | bytearray = buf[off : off + length]
                if record[:4] == _V1:
                    try:
                        old = _decode_v1(bytes(record[_V1_HEAD.size :]), self._ids)
                    except Exception as exc:  # checksummed, yet not our .npz: damage
                        log.error("journal %s: record at %d unreadable: %r", self.path, off, exc)
                        damaged.append((off, off + length))
                        continue
                    if (old.stream_id < 0).any():
                        log.error(
                            "journal: dropping candles of streams this daemon does not own; "
                            "their owner refills them from the exchange"
                        )
                    record = _encode(old.take(old.stream_id >= 0), self._names)
                    converted += 1
                f.write(record)
                self._written.append((self._end, len(record)))
                self._end += len(record)
            f.flush()
            os.fsync(f.fileno())
        if converted:
            log.info(
                "journal %s: %d records of the previous format converted", self.path, converted
            )
        if not damaged:
            os.replace(tmp, self.path)
            _fsync_dir(self.directory)
            return
        aside = self.path.with_name(f"{_NAME}.damaged-{time.time_ns()}")
        try:
            os.link(self.path, aside)
        except OSError:  # a file system without hard links: a copy
            shutil.copyfile(self.path, aside)
            with open(aside, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.directory)
        self.set_aside = aside
        self.damaged_regions = len(damaged)
        self.damaged_bytes = sum(end - start for start, end in damaged)
        log.warning(
            "journal %s: %d damaged bytes in %d stretch(es) at %s set aside as %s; "
            "%d intact records kept to replay",
            self.path,
            self.damaged_bytes,
            len(damaged),
            ", ".join(f"{s}-{e}" for s, e in damaged[:5]),
            aside.name,
            len(records),
        )

    # -- the event loop's side -----------------------------------------------------------------

    def __len__(self) -> int:
        """Records not yet consumed (written or not)."""
        return self._next_seq - self.head_seq

    @property
    def pending(self) -> int:
        """Records appended but not yet written (waiting for :meth:`write` or :meth:`flush`)."""
        with self._lock:
            return len(self._pending)

    @property
    def written(self) -> int:
        """Records written and not yet consumed: what :meth:`peek` can hand out."""
        with self._lock:
            return len(self._written)

    @property
    def written_seq(self) -> int:
        """The sequence number after the last written record."""
        with self._lock:
            return self.head_seq + len(self._written)

    @property
    def unsynced(self) -> int:
        """Records written and neither consumed nor made durable by a flush yet."""
        with self._lock:
            end = self.head_seq + len(self._written)
            return max(0, end - max(self.head_seq, self._synced_seq))

    def append(self, candles: Candles) -> int:
        """Queue the batch for the next :meth:`flush`; returns its sequence number."""
        record = _encode(candles, self._names)
        with self._lock:
            self._raise_if_failed()
            self._pending.append(record)
        self._next_seq += 1
        return self._next_seq - 1

    def peek(self, index: int = 0) -> Candles | None:
        """The oldest written record not yet consumed (``index``: the one that many after it),
        or None."""
        with self._lock:
            if index >= len(self._written):
                return None
            off, length = self._written[index]
            record = os.pread(self._fd, length, off)
        if len(record) != length:
            raise JournalError(f"journal {self.path}: record at {off} shorter than written")
        return _decode(record, self._ids)

    def consume(self) -> None:
        """The record :meth:`peek` returned is stored: move past it and mark it consumed.

        Raises :class:`JournalError` when there is no written record to move past: consuming
        nothing while records remain would store one batch over and over.
        """
        with self._lock:
            if not self._written:
                raise JournalError(
                    f"journal {self.path}: consume() with no written record "
                    f"({len(self._pending)} waiting for a write)"
                )
            off, _ = self._written.popleft()
            # Not synced: should a crash lose the mark, the writer finds the batch stored.
            os.pwrite(self._fd, _DONE, off)
            self.head_seq += 1

    def close(self) -> None:
        """Make pending records durable; remove the file when everything in it is consumed."""
        if self._fd < 0:
            return
        try:
            if self._failed is None:
                self.flush()
        finally:
            with self._lock:
                empty = not self._written and not self._pending
            os.close(self._fd)
            self._fd = -1
        if empty:
            self.path.unlink(missing_ok=True)
            _fsync_dir(self.directory)

    # -- the write on the loop, the flush in a worker thread or not ---------------------------

    def write(self) -> int:
        """Write the pending records with one ``pwritev`` into the page cache, unsynced;
        returns how many. Writes nothing (the records wait for :meth:`flush`) while a flush
        moves the file, or when one is due to: the event loop must not wait on the disk."""
        if not self._writing.acquire(blocking=False):
            return 0
        try:
            with self._lock:
                self._raise_if_failed()
                if not self._pending or self._upkeep_due() is not None:
                    return 0
                batch, self._pending = self._pending, []
            self._write(batch)
            return len(batch)
        finally:
            self._writing.release()

    def flush(self) -> int:
        """Write what is pending (truncating or compacting the file first when that is due)
        and make every record written so far durable with one ``fdatasync``; returns how many
        records it wrote. A failure leaves the journal failed (the records' fate on disk is
        unknown: the next start sorts them out) and raises :class:`JournalError`."""
        with self._flushing:
            with self._writing:
                with self._lock:
                    self._raise_if_failed()
                    batch, self._pending = self._pending, []
                    upkeep = self._upkeep_due() if batch else None
                    synced = self.head_seq + len(self._written) + len(batch)
                    if synced <= max(self.head_seq, self._synced_seq):
                        return 0  # nothing written or to write that is not durable or stored
                try:
                    if upkeep == 0:
                        os.ftruncate(self._fd, 0)
                        with self._lock:
                            self._end = 0
                    elif upkeep is not None:
                        self._compact(upkeep)
                except OSError as exc:
                    self._fail(exc)
                self._write(batch)
            try:  # the loop may write on meanwhile: those records wait for the next flush
                os.fdatasync(self._fd)
            except OSError as exc:
                self._fail(exc)
            with self._lock:
                self._synced_seq = max(self._synced_seq, synced)
                self.syncs += 1
            return len(batch)

    def _upkeep_due(self) -> int | None:
        """Where the file must start before the next write, when not where it does: 0 when
        everything written is consumed and the file is big (start over rather than grow on),
        the oldest unconsumed record's offset when as many bytes before it are consumed as
        after it (compact). Under ``_lock``."""
        if not self._written:
            return 0 if self._end >= RECLAIM_BYTES else None
        head = self._written[0][0]
        return head if head >= RECLAIM_BYTES and self._end - head <= head else None

    def _write(self, batch: list[bytearray]) -> None:
        """``batch``'s records at the file's end. Under ``_writing``."""
        if not batch:
            return
        with self._lock:
            off = self._end
        try:
            _write_all(self._fd, batch, off)
        except OSError as exc:
            self._fail(exc)
        with self._lock:
            for record in batch:
                self._written.append((off, len(record)))
                off += len(record)
            self._end = off

    def _fail(self, exc: OSError) -> NoReturn:
        with self._lock:
            self._failed = exc
        raise JournalError(f"journal {self.path}: write failed: {exc}") from exc

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise JournalError(f"journal {self.path} failed earlier") from self._failed

    def _compact(self, head: int) -> None:
        """Never fully consumed, the file would grow without end: move the records from
        ``head`` on to a fresh file (temp file, fsync, rename, directory fsync). Called by
        :meth:`flush` when at least as many bytes before ``head`` are consumed as after it."""
        live = os.pread(self._fd, self._end - head, head)
        tmp = self.path.with_name(_NAME + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, [live], 0)
            os.fdatasync(fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            # A record consumed since the copy keeps no mark in the new file: a crash now
            # replays it, and the writer finds it stored.
            old, self._fd = self._fd, fd
            self._written = deque((off - head, length) for off, length in self._written)
            self._end = len(live)
        os.close(old)
        log.info("journal %s: %d stored bytes reclaimed", self.path, head)

"""On-disk journal for batches the database cannot take yet.

Append-only file of records ``MAGIC | length u32 | crc32 u32 | payload`` where the payload is the
batch's columns as an ``.npz`` (no pickles). Each append is fsync'd before it returns, so a
batch acknowledged to the journal survives kill -9. A torn or corrupt tail (crash mid-append) is
detected by the length and checksum and ignored with a warning. Records are read back in order;
the file is removed once everything in it is stored.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ingestor.candles import DECIMAL_FIELDS, Candles

__all__ = ["Journal"]

log = logging.getLogger(__name__)

_MAGIC = b"IJR1"
_HEAD = struct.Struct("<4sII")


def _encode(c: Candles, names: list[str]) -> bytes:
    # Streams are recorded by name, not by this process's ids: a restart with another symbol
    # list or shard must not replay candles under the wrong stream.
    arrays: dict[str, np.ndarray[Any, Any]] = {
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
    return buf.getvalue()


def _decode(payload: bytes, ids: dict[bytes, int]) -> Candles:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        streams = z["stream"].tolist()
        unknown = sorted({s.decode() for s in streams if s not in ids})
        if unknown:
            log.error(
                "journal: dropping candles of streams this daemon does not own (%s); "
                "their owner refills them from the exchange",
                ", ".join(unknown[:5]),
            )
        c = Candles(
            stream_id=np.array([ids.get(s, -1) for s in streams], dtype=np.int32),
            open_time=z["open_time"],
            close_time=z["close_time"],
            decimals={f: z[f"d_{f}"] for f in DECIMAL_FIELDS},
            trades_count=z["trades_count"],
            close_f=z["close_f"],
            indicators=z["indicators"] if "indicators" in z.files else None,
            source=bytes(z["source"][0]).decode(),
        )
    return c.take(c.stream_id >= 0) if unknown else c


class Journal:
    """One journal file under the data directory."""

    def __init__(self, directory: Path, stream_names: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._names = stream_names
        self._ids = {n.encode(): i for i, n in enumerate(stream_names)}
        self.path = directory / "market_data.journal"
        self.records = sum(1 for _ in self._scan())
        self._read_offset = 0
        self.consumed = 0  # records consumed since this object was made

    def __len__(self) -> int:
        """Records not yet consumed."""
        return self.records

    @property
    def head_seq(self) -> int:
        """Sequence number of the oldest unconsumed record (appends number from 0)."""
        return self.consumed

    def append(self, candles: Candles) -> int:
        """Append durably; returns the record's sequence number."""
        payload = _encode(candles, self._names)
        head = _HEAD.pack(_MAGIC, len(payload), zlib.crc32(payload))
        with open(self.path, "ab") as f:
            f.write(head + payload)
            f.flush()
            os.fsync(f.fileno())
        self.records += 1
        return self.consumed + self.records - 1

    def _scan(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(offset after the record, payload) of each intact record from ``start``."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            while True:
                head = f.read(_HEAD.size)
                if not head:
                    return
                if len(head) < _HEAD.size:
                    log.warning("journal %s: torn record header at %d ignored", self.path, pos)
                    return
                magic, length, crc = _HEAD.unpack(head)
                payload = f.read(length)
                if magic != _MAGIC or len(payload) < length or zlib.crc32(payload) != crc:
                    log.warning(
                        "journal %s: corrupt record at %d ignored (and all after)", self.path, pos
                    )
                    return
                pos += _HEAD.size + length
                yield pos, payload

    def peek(self) -> Candles | None:
        """The oldest record not yet consumed, or None."""
        for _, payload in self._scan(self._read_offset):
            return _decode(payload, self._ids)
        return None

    def consume(self) -> None:
        """The record returned by :meth:`peek` is stored: move past it; drop the file at the end."""
        for end, _ in self._scan(self._read_offset):
            self._read_offset = end
            self.records -= 1
            self.consumed += 1
            break
        if self.records <= 0:
            self.path.unlink(missing_ok=True)
            self._read_offset = 0
            self.records = 0

"""Journal cost per batch: the raw-column record with group commit against the old format.

The old format (``numpy.savez`` of every batch into a zip, the file opened, written and
fsync'd per append, each consume re-reading and re-checksumming the record) is rebuilt here as
it was, so both run in the same process on the same disk. Per batch of 10 and 2,048 candles
(2,400 streams, indicators on): median wall and CPU microseconds of an append made durable
(append + flush, one batch per flush: the worst case of group commit; its CPU includes the
kernel's for write and fdatasync), of one flush shared by 8 batches, of the encoding alone (the
user-space part: the old ``savez`` against the new append), and of a consume. The disk is shared
and noisy: wall figures of a sync vary several-fold between runs, CPU figures much less.

``after_idle`` is the spool's two paths for a live batch (10 candles) on the event loop, each
after 50 ms idle as between close times: append + ``write`` on the loop (a batch the database
acknowledges in time) against append + ``flush`` in a worker thread (one it does not, and every
batch before ``ingest.journal_sync_after_ms``): the process's CPU per batch, the thread's
wake-up and the loop's included.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import statistics
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ingestor.candles import DECIMAL_FIELDS, Candles
from ingestor.store.journal import Journal, _encode, _prefixed

__all__ = ["run"]

STREAMS = 2400
SIZES = {"small": 10, "large": 2048}
ROUNDS = {"small": 400, "large": 80}


def _batch(n: int, rng: np.random.Generator) -> Candles:
    sid = np.sort(rng.choice(STREAMS, n, replace=n > STREAMS)).astype(np.int32)
    t = (1_700_000_000_000 // 60_000 + rng.integers(0, 10_000, n)) * 60_000
    price = rng.uniform(0.0001, 60_000, n)
    dec = {f: np.array([f"{p:.8f}".encode() for p in price], dtype="S32") for f in DECIMAL_FIELDS}
    return Candles(
        stream_id=sid,
        open_time=t.astype(np.int64),
        close_time=(t + 59_999).astype(np.int64),
        decimals=dec,
        trades_count=rng.integers(0, 10_000, n).astype(np.int64),
        close_f=price,
        indicators=rng.normal(size=(n, 8)),
    )


class _OldJournal:
    """The journal before issue 14/17, as it was: npz per record, open + fsync per append."""

    _HEAD = struct.Struct("<4sII")

    def __init__(self, directory: Path, names: list[str]) -> None:
        self.path = directory / "old.journal"
        self._names = names
        self._read = 0

    def append(self, c: Candles) -> None:
        payload = self.encode(c)
        head = self._HEAD.pack(b"IJR1", len(payload), zlib.crc32(payload))
        with open(self.path, "ab") as f:
            f.write(head + payload)
            f.flush()
            os.fsync(f.fileno())

    def encode(self, c: Candles) -> bytes:
        arrays: dict[str, Any] = {
            "stream": np.array([self._names[i] for i in c.stream_id.tolist()], dtype="S32"),
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

    def consume(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._read)
            _, length, crc = self._HEAD.unpack(f.read(self._HEAD.size))
            payload = f.read(length)
            assert zlib.crc32(payload) == crc
        self._read += self._HEAD.size + length


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - w) * 1e6, (time.process_time() - c) * 1e6


def _median(samples: list[tuple[float, float]], per: int = 1) -> dict[str, float]:
    return {
        "wall_us": round(statistics.median(s[0] for s in samples) / per, 1),
        "cpu_us": round(statistics.median(s[1] for s in samples) / per, 1),
    }


def _measure(size: int, rounds: int, directory: Path) -> dict[str, Any]:
    rng = np.random.default_rng(size)
    names = [f"S{i:04d}USDT:1m" for i in range(STREAMS)]
    batches = [_batch(size, rng) for _ in range(8)]
    old = _OldJournal(directory, names)
    new = Journal(directory / "new", names)
    o_enc: list[tuple[float, float]] = []
    o_app: list[tuple[float, float]] = []
    o_con: list[tuple[float, float]] = []
    n_enc: list[tuple[float, float]] = []
    n_app: list[tuple[float, float]] = []
    n_con: list[tuple[float, float]] = []
    n_group: list[tuple[float, float]] = []
    for r in range(rounds):
        b = batches[r % len(batches)]
        o_enc.append(_timed(functools.partial(old.encode, b)))
        o_app.append(_timed(functools.partial(old.append, b)))
        o_con.append(_timed(old.consume))
        n_enc.append(_timed(functools.partial(new.append, b)))
        flush = _timed(new.flush)
        n_app.append((n_enc[-1][0] + flush[0], n_enc[-1][1] + flush[1]))
        n_con.append(_timed(new.consume))
        if r % 8 == 0:

            def group() -> None:
                for g in batches:
                    new.append(g)
                new.flush()

            n_group.append(_timed(group))
            for _ in batches:
                new.consume()
    new.close()
    return {
        "candles": size,
        "old_encode_npz": _median(o_enc),
        "new_encode_append": _median(n_enc),
        "old_append_fsync": _median(o_app),
        "old_consume": _median(o_con),
        "new_append_flush": _median(n_app),
        "new_append_flush_8_per_fdatasync": _median(n_group, len(batches)),
        "new_consume": _median(n_con),
        "old_record_bytes": old.path.stat().st_size // rounds,
        "new_record_bytes": len(_encode(batches[0], [_prefixed(n) for n in names])),
    }


IDLE_S = 0.05
IDLE_ROUNDS = 100


async def _after_idle(directory: Path) -> dict[str, Any]:
    names = [f"S{i:04d}USDT:1m" for i in range(STREAMS)]
    batches = [_batch(SIZES["small"], np.random.default_rng(i)) for i in range(8)]
    journal = Journal(directory, names)
    out: dict[str, Any] = {}
    for path in ("append_write_on_loop", "append_flush_in_thread"):
        samples = []
        for r in range(IDLE_ROUNDS):
            await asyncio.sleep(IDLE_S)
            w, c = time.perf_counter(), time.process_time()
            journal.append(batches[r % len(batches)])
            if path == "append_write_on_loop":
                journal.write()
            else:
                await asyncio.to_thread(journal.flush)
            samples.append(((time.perf_counter() - w) * 1e6, (time.process_time() - c) * 1e6))
            journal.consume()
        out[path] = _median(samples)
    journal.close()
    return out


def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        for name, size in SIZES.items():
            d = Path(tmp) / name
            d.mkdir()
            out[name] = _measure(size, ROUNDS[name], d)
        try:
            import uvloop  # the daemon's loop

            out["after_idle"] = uvloop.run(_after_idle(Path(tmp) / "idle"))
        except ImportError:
            out["after_idle"] = asyncio.run(_after_idle(Path(tmp) / "idle"))
    return out

"""`make soak`: N minutes of random faults of every kind, then an audit of `market_data`.

Real processes throughout: the simulator (in this process, real sockets), `ingestor run` as a
child process (killed with SIGKILL/SIGTERM and restarted at random), a SecantusDB server
(killed and restarted on the same storage at random), the feed's own faults (disconnects,
repeated/dropped finals, garbage frames, REST 429s and delays) switched at random, and journal
tearing (the daemon killed, sometimes during a database outage, and its journal truncated at a
random offset, sometimes with junk after the cut, as a torn write leaves it). At the end
everything is healed, the daemon is stopped, and the audit prints, per stream: klines expected,
stored, missing, duplicated; and the rejects. Exit 0 only with 0 missing and 0 duplicated.

    SOAK_MINUTES=10 make soak          (or: python scripts/soak.py --minutes 10 --seed 1)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestor.simulator import FaultConfig, SimConfig, Simulator
from ingestor.store.documents import datetime_to_ms
from tests.conftest import DBServer
from tests.integration.harness import Daemon, client, write_config

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TIMEFRAMES = ("1m", "5m", "15m")
SPEED = 60.0


def _tear_journal(path: Path, rng: random.Random) -> int:
    """Truncate the journal at a random offset (junk after the cut at times); the bytes cut."""
    if not path.exists() or not (size := path.stat().st_size):
        return 0
    cut = rng.randrange(size)
    with path.open("r+b") as f:
        f.truncate(cut)
        if rng.random() < 0.3:
            f.seek(cut)
            f.write(rng.randbytes(rng.randrange(1, 512)))
    return size - cut


def _random_faults(rng: random.Random) -> dict[str, Any]:
    return {
        "disconnect_every_s": rng.choice([None, None, 3.0, 7.0]),
        "repeat_final_p": rng.choice([0.0, 0.05, 0.2]),
        "drop_final_p": rng.choice([0.0, 0.03, 0.2]),
        "garbage_p": rng.choice([0.0, 0.01, 0.05]),
        "rest_429_p": rng.choice([0.0, 0.0, 0.1]),
        "rest_429_retry_after_s": 1,
        "rest_delay_s": rng.choice([0.0, 0.0, 0.3]),
    }


async def _audit(sim: Simulator, uri: str, db: str, stop_ms: int) -> dict[str, Any]:
    """Klines closed two real seconds before the stop must all be stored once (later ones may
    still have been on the wire; the next start fetches them); nothing not closed at the stop
    may be stored."""
    audit_end = stop_ms - int(2000 * SPEED)
    mc = client(uri)
    try:
        coll = mc[db]["market_data"]
        streams: dict[str, Any] = {}
        totals = Counter[str]()
        for sym in SYMBOLS:
            for tf in TIMEFRAMES:
                times = [
                    datetime_to_ms(d["open_time"])
                    async for d in coll.find({"symbol": sym, "timeframe": tf}, {"open_time": 1})
                ]
                counts = Counter(times)
                first = min(times)
                closed = {
                    int(r[0])
                    for r in sim.market.closed_klines(sym, tf, first, stop_ms)
                    if int(r[6]) < stop_ms
                }
                expected = {t for t in closed if t < audit_end}
                row = {
                    "expected": len(expected),
                    "stored": sum(1 for t in times if t in expected),
                    "missing": len(expected - set(counts)),
                    "duplicated": sum(n - 1 for n in counts.values() if n > 1),
                    # stored but not a closed kline of the exchange at the stop
                    "not_closed": len(set(counts) - closed),
                }
                streams[f"{sym} {tf}"] = row
                totals.update(row)
        rejects = Counter[str]()
        async for d in mc[db]["market_data_rejects"].find({}, {"reason": 1}):
            rejects[d["reason"]] += 1
    finally:
        await mc.close()
    return {"streams": streams, "totals": dict(totals), "rejects": dict(rejects)}


async def soak(minutes: float, seed: int) -> int:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="ingestor-soak-"))
    server = DBServer(work / "db")
    server.start()
    events = Counter[str]()
    cfg = SimConfig(
        symbols=SYMBOLS, speed=SPEED, update_interval_s=0.25, seed=seed, faults=FaultConfig()
    )
    try:
        async with Simulator(cfg) as sim:
            conf = write_config(
                work / "config.toml",
                sim,
                server.uri,
                "soak",
                work / "data",
                symbols=list(SYMBOLS),
                timeframes=list(TIMEFRAMES),
                final_grace_ms=1000,
            )
            daemon = Daemon(conf, work / "daemon.log")
            await daemon.start()
            deadline = time.monotonic() + minutes * 60
            db_up = True
            while time.monotonic() < deadline:
                await asyncio.sleep(rng.uniform(4, 15))
                if daemon.proc is not None and daemon.proc.returncode is not None:
                    # A daemon that gave up (e.g. its database was down at startup) is restarted,
                    # as systemd or Kubernetes would, and counted: the audit says how often.
                    events[f"exited_on_its_own_{daemon.proc.returncode}"] += 1
                    daemon = Daemon(conf, work / "daemon.log")
                    await daemon.start()
                kind = rng.choice(["faults", "faults", "sigkill", "sigterm", "db", "tear", "none"])
                events[kind] += 1
                print(f"[{time.strftime('%H:%M:%S')}] {kind}", flush=True)
                if kind == "faults":
                    sim.set_faults(**_random_faults(rng))
                elif kind in ("sigkill", "sigterm"):
                    await daemon.signal(signal.SIGKILL if kind == "sigkill" else signal.SIGTERM)
                    rc = await daemon.wait(30)
                    events[f"exit_{rc}"] += 1
                    await asyncio.sleep(rng.uniform(0.5, 5))
                    daemon = Daemon(conf, work / "daemon.log")
                    await daemon.start()
                elif kind == "tear":
                    # A torn journal: the daemon dies mid-append (its database down at times,
                    # so the journal holds batches not stored yet), the file is cut anywhere.
                    outage = rng.random() < 0.5
                    if outage:
                        server.stop(kill=True)
                        await asyncio.sleep(rng.uniform(2, 8))
                    await daemon.signal(signal.SIGKILL)
                    rc = await daemon.wait(30)
                    cut = _tear_journal(work / "data" / "journal" / "market_data.journal", rng)
                    events["torn_bytes"] += cut
                    print(f"    tore {cut} bytes off the journal (db outage: {outage})", flush=True)
                    if outage:
                        server.start()
                    daemon = Daemon(conf, work / "daemon.log")
                    await daemon.start()
                elif kind == "db" and db_up:
                    server.stop(kill=rng.random() < 0.5)
                    await asyncio.sleep(rng.uniform(3, 15))
                    server.start()
            # Heal: no faults, everything up, let it catch up, then stop cleanly.
            sim.set_faults(
                disconnect_every_s=None,
                repeat_final_p=0.0,
                drop_final_p=0.0,
                garbage_p=0.0,
                rest_429_p=0.0,
                rest_delay_s=0.0,
            )
            if daemon.proc is None or daemon.proc.returncode is not None:
                daemon = Daemon(conf, work / "daemon.log")
                await daemon.start()
            await asyncio.sleep(20)
            # Klines that closed in the last two real seconds may still be on the wire when
            # the daemon stops (the next start would fetch them): the audit ends before them.
            stop_ms = sim.clock.now_ms()
            await daemon.signal(signal.SIGTERM)
            rc = await daemon.wait(30)
            audit = await _audit(sim, server.uri, "soak", stop_ms)
    finally:
        server.stop()
    events["journal_set_aside_files"] = len(list((work / "data" / "journal").glob("*.damaged-*")))
    audit["events"] = dict(events)
    audit["final_exit_code"] = rc
    audit["minutes"] = minutes
    print(f"\n{'stream':12} {'expected':>8} {'stored':>8} {'missing':>8} {'dup':>5} {'open':>5}")
    for name, row in audit["streams"].items():
        print(
            f"{name:12} {row['expected']:>8} {row['stored']:>8} {row['missing']:>8} "
            f"{row['duplicated']:>5} {row['not_closed']:>5}"
        )
    t = audit["totals"]
    print(
        f"{'TOTAL':12} {t['expected']:>8} {t['stored']:>8} {t['missing']:>8} "
        f"{t['duplicated']:>5} {t['not_closed']:>5}"
    )
    print(f"rejected: {sum(audit['rejects'].values())} {audit['rejects']}")
    print(f"events: {audit['events']}; logs in {work}")
    (work / "audit.json").write_text(json.dumps(audit, indent=2))
    ok = t["missing"] == 0 and t["duplicated"] == 0 and t["not_closed"] == 0 and rc == 0
    print("AUDIT OK" if ok else "AUDIT FAILED")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", "10")))
    p.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "1")))
    args = p.parse_args()
    return asyncio.run(soak(args.minutes, args.seed))


if __name__ == "__main__":
    sys.exit(main())

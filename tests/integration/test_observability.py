"""What an operator looks at, against a real daemon (simulator + SecantusDB + `ingestor run`):

* every metric the alerting rules and the Grafana dashboard read is one the daemon exports on
  /metrics (a scrape, compared name by name);
* `ingestor status` (the real command line) names every stream with its newest stored candle,
  and its exit code follows readiness: 0 ready, 1 with the reason once the database is stopped,
  2 once the daemon is gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingestor.candles import INDICATOR_FIELDS
from ingestor.simulator import SimConfig, Simulator
from tests.conftest import REPO, TIMEOUT_FACTOR, DBServer
from tests.integration.harness import eventually
from tests.integration.test_ops import TIMEFRAMES, _config, _http, _until
from tests.scripts.deploy_exprs import (
    PROMETHEUS_SYNTHESIZED,
    dashboard_exprs,
    exported_names,
    metric_names,
    rule_exprs,
    variable_metric_names,
)

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

SYMBOLS = ("BTCUSDT", "ETHUSDT")


async def _status(*args: str) -> tuple[int, str, str]:
    """`ingestor status ...` as a child process: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingestor",
        "status",
        *args,
        cwd=REPO,
        env=dict(os.environ, COLUMNS="250"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60 * TIMEOUT_FACTOR):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _used_names() -> set[str]:
    names = set(variable_metric_names())
    for expr in dashboard_exprs() + rule_exprs():
        names |= metric_names(expr)
    return names


@pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="stops its own database server")
async def test_rules_and_dashboard_read_exported_metrics_and_status_follows_readiness(
    tmp_path: Path, db_name: str, spawn: Any
) -> None:
    server = DBServer(tmp_path / "db")
    server.start()
    streams = {f"{s}:{t}" for s in SYMBOLS for t in TIMEFRAMES}
    cfg = SimConfig(symbols=SYMBOLS, speed=120.0, update_interval_s=0.1, seed=18)
    try:
        async with Simulator(cfg) as sim:
            conf = _config(tmp_path, sim, server.uri, db_name, 0, SYMBOLS)
            daemon = spawn(conf, tmp_path / "d.log")
            await daemon.start()
            base = await daemon.health_base()
            await _until(daemon, f"{base}/readyz", 200, 90, "ready once caught up")

            # -- every name the rules and the dashboard read is exported ----------------------
            status, text = await _http(f"{base}/metrics")
            assert status == 200
            exported = exported_names(iter(text_string_to_metric_families(text)))
            used = _used_names()
            missing = used - exported - PROMETHEUS_SYNTHESIZED
            assert not missing, f"read by rules or dashboard, not exported: {missing}"
            assert "ingestor_commit_latency_seconds_bucket" in used & exported  # a histogram

            # -- ingestor status: the table names every stream with its newest candle ---------
            code, out, err = await _status("--url", base)
            assert code == 0, (out, err)
            assert "READY" in out and "DEGRADED" not in out
            for name in streams:
                assert name in out
            code, out, _ = await _status("--url", base, "--json")
            assert code == 0
            doc = json.loads(out)
            assert doc["ready"] is True and {s["stream"] for s in doc["streams"]} == streams
            for s in doc["streams"]:
                candle = s["candle"]
                assert candle["open_time_ms"] == s["last_stored_open_ms"], s
                assert float(candle["close"]) > 0
                assert list(candle["indicators"]) == list(INDICATOR_FIELDS)
                # warm-up stored 100 candles per stream: every lookback (SMA 50 the longest)
                # is filled on the newest one
                assert all(v is not None for v in candle["indicators"].values()), s
                assert candle["open_time"].startswith("20") and s["lag_s"] is not None
            _, direct = await _http(f"{base}/status")
            assert set(doc) == set(direct)  # the document as the daemon sends it

            # -- the database goes away: exit 1, and the reason is printed --------------------
            server.stop(kill=True)
            seen: list[Any] = []

            async def not_ready() -> bool:
                seen[:] = await _status("--url", base)
                return bool(seen[0] == 1)

            await eventually(not_ready, 60, "`ingestor status` exit 1 without the database")
            out = seen[1]
            assert "DEGRADED" in out and "why: database" in out, out
            for name in streams:
                assert name in out

            # -- the daemon is gone: exit 2 ------------------------------------------------------
            await daemon.kill()
            await daemon.wait(30)
            code, out, err = await _status("--url", base, "--timeout", "2")
            assert code == 2 and out == "", (out, err)
            assert f"cannot reach {base}/status" in err
    finally:
        server.stop()

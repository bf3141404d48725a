"""Operability against real processes: the health endpoint of `ingestor run`, readiness through a
database outage, and three sharded daemons sharing one exchange and one database."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingestor.config import load_config
from ingestor.shard import owns
from ingestor.simulator import SimConfig, Simulator
from tests.conftest import REPO, TIMEOUT_FACTOR, DBServer
from tests.integration.harness import (
    Daemon,
    assert_exact,
    client,
    eventually,
    settle,
    stored_docs,
    write_config,
)

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

SPEED = 120.0
TIMEFRAMES = ("1m", "5m")


def _config(
    tmp: Path,
    sim: Simulator,
    uri: str,
    db: str,
    port: int,
    symbols: tuple[str, ...],
    shard: str = "0/1",
) -> Path:
    path = write_config(
        tmp / "config.toml",
        sim,
        uri,
        db,
        tmp / "data",
        symbols=list(symbols),
        timeframes=list(TIMEFRAMES),
        warmup_candles=100,
        final_grace_ms=400,
    )
    text = path.read_text()
    # The harness writes [health] port = 0 and [service] last: set our port and shard there.
    assert "[health]\nport = 0\n" in text and "[" not in text.partition("\n[service]\n")[2]
    text = text.replace("[health]\nport = 0\n", f"[health]\nport = {port}\n")
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("log_format"))
    path.write_text(text + f'\nshard = "{shard}"\nlog_format = "json"\n')
    return path


async def _http(url: str) -> tuple[int, Any]:
    """(status, JSON or text); (0, error) while nothing listens yet."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, timeout=aiohttp.ClientTimeout(total=5 * TIMEOUT_FACTOR)) as resp,
        ):
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, repr(exc)


def _alive(daemon: Daemon) -> None:
    if daemon.proc is not None and daemon.proc.returncode is not None:
        raise AssertionError(f"daemon died:\n{daemon.output()[-3000:]}")


async def _until(daemon: Daemon, url: str, status: int, within: float, what: str) -> Any:
    seen: list[Any] = []

    async def check() -> bool:
        _alive(daemon)
        got, body = await _http(url)
        seen[:] = [got, body]
        return got == status

    try:
        await eventually(check, within, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer {seen}\n{daemon.output()[-2000:]}") from None
    return seen[1]


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="stops its own database server")
async def test_health_endpoints_of_a_real_daemon_through_a_database_outage(
    tmp_path: Path, db_name: str, spawn: Any
) -> None:
    server = DBServer(tmp_path / "db")
    server.start()
    symbols = ("BTCUSDT", "ETHUSDT")
    cfg = SimConfig(symbols=symbols, speed=SPEED, update_interval_s=0.1, seed=11)
    try:
        async with Simulator(cfg) as sim:
            conf = _config(tmp_path, sim, server.uri, db_name, 0, symbols)
            daemon = spawn(conf, tmp_path / "d.log")
            await daemon.start()
            base = await daemon.health_base()
            body = await _until(daemon, f"{base}/healthz", 200, 60, "/healthz")
            assert body["status"] == "alive"
            body = await _until(daemon, f"{base}/readyz", 200, 90, "ready once caught up")
            assert body == {"status": "ready", "failed": [], "checks": body["checks"]}

            status, text = await _http(f"{base}/metrics")
            assert status == 200
            m = _metrics(text)
            assert m[("ingestor_ready", ())] == 1 and m[("ingestor_database_up", ())] == 1
            assert m[("ingestor_frames_received_total", ())] > 0
            assert m[("ingestor_candles_inserted_total", ())] >= 4 * 100
            assert m[("ingestor_batch_size_count", ())] >= 1
            assert m[("ingestor_commit_latency_seconds_count", ())] >= 4 * 100
            assert m[("ingestor_feed_connected", (("connection", "0"),))] == 1
            lag = m[("ingestor_stream_lag_seconds", (("symbol", "BTCUSDT"), ("timeframe", "1m")))]
            assert 0 <= lag <= 3600
            syncs = m[("ingestor_journal_syncs_total", ())]

            status, st = await _http(f"{base}/status")
            assert status == 200 and st["ready"] is True and st["version"]
            streams = {s["stream"]: s for s in st["streams"]}
            assert set(streams) == {f"{s}:{t}" for s in symbols for t in TIMEFRAMES}
            for s in streams.values():
                assert s["last_stored_open_ms"] > 0 and s["connected"] is True
                assert s["last_stored_open_ms"] <= sim.clock.now_ms()

            # The database goes away: not ready ("database"), but alive.
            server.stop(kill=True)
            body = await _until(daemon, f"{base}/readyz", 503, 30, "503 during the outage")
            assert "database" in body["failed"] and body["status"] == "degraded"
            assert body["checks"]["database"] == {"ok": False}
            assert (await _http(f"{base}/healthz"))[0] == 200
            status, text = await _http(f"{base}/metrics")
            assert status == 200 and _metrics(text)[("ingestor_database_up", ())] == 0

            async def synced() -> bool:  # batches left unacknowledged are synced in the journal
                text = (await _http(f"{base}/metrics"))[1]
                return _metrics(text)[("ingestor_journal_syncs_total", ())] > syncs

            await eventually(synced, 30, "the journal to sync what the database did not take")

            # Back: ready again once the journaled batches are stored and streams are fresh.
            server.start()
            await _until(daemon, f"{base}/readyz", 200, 90, "ready after the outage")
            await daemon.signal()
            assert await daemon.wait(15) == 0, daemon.output()[-3000:]
    finally:
        server.stop()
    # Everything the daemon printed is one JSON object per line.
    records = [json.loads(line) for line in daemon.output().splitlines()]
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any(r["message"].startswith("caught up") for r in records)


async def test_three_shards_store_every_stream_exactly_once(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    # One symbol per shard (their shard of 3 is pinned in tests/ingestor/test_shard.py).
    symbols = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
    owner = {s: next(i for i in range(3) if owns(s, i, 3)) for s in symbols}
    assert sorted(owner.values()) == [0, 1, 2]
    cfg = SimConfig(symbols=symbols, speed=SPEED, update_interval_s=0.1, seed=21)
    mc = client(mongo_uri)
    try:
        async with Simulator(cfg) as sim:
            shards: list[Daemon] = []
            for i in range(3):
                d = tmp_path / f"shard{i}"
                d.mkdir()
                conf = _config(d, sim, mongo_uri, db_name, 0, symbols, shard=f"{i}/3")
                shards.append(spawn(conf, d / "d.log"))
            await asyncio.gather(*(daemon.start() for daemon in shards))
            daemons = [(daemon, await daemon.health_base()) for daemon in shards]
            for daemon, base in daemons:
                await _until(daemon, f"{base}/readyz", 200, 120, "every shard ready")
            # Run on for a while past readiness: live klines, not only the catch-up.
            target = sim.clock.now_ms() + 6 * 60_000

            async def live() -> bool:
                for daemon, _ in daemons:
                    _alive(daemon)
                for sym in symbols:
                    doc = await mc[db_name]["market_data"].find_one(
                        {"symbol": sym, "timeframe": "1m"}, sort=[("open_time", -1)]
                    )
                    if doc is None or doc["open_time"].timestamp() * 1000 < target:
                        return False
                return True

            await eventually(live, 60, "6 more minutes of live klines")
            for i, (_, base) in enumerate(daemons):
                status, st = await _http(f"{base}/status")
                assert status == 200
                mine = {s["stream"] for s in st["streams"]}
                assert mine == {f"{s}:{t}" for s in symbols if owner[s] == i for t in TIMEFRAMES}
            streams = {(s, t) for s in symbols for t in TIMEFRAMES}
            through_ms = await settle(sim, mongo_uri, db_name, streams)
            for daemon, _ in daemons:
                await daemon.signal()
            for daemon, _ in daemons:
                assert await daemon.wait(15) == 0, daemon.output()[-3000:]
            stop_ms = sim.clock.now_ms()  # after every exit: nothing stored closed later
        docs = await stored_docs(mongo_uri, db_name)
        assert_exact(sim, docs, through_ms, stop_ms, streams)
    finally:
        await mc.drop_database(db_name)
        await mc.close()


# -- deployment files: consistent with the code (offline, no container engine needed) ----------


def _load_text(text: str, env: dict[str, str]) -> Any:
    """The daemon's own loader on a config.toml given as text, with ``env`` as the environment."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(text)
        return load_config(path, env)


def _yaml(path: Path) -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_k8s_manifests_agree_with_the_daemon() -> None:
    k8s = REPO / "deploy" / "k8s"
    docs = {d["kind"]: d for f in sorted(k8s.glob("*.yaml")) for d in _yaml(f)}
    assert set(docs) >= {"StatefulSet", "ConfigMap", "Secret", "Service", "PodDisruptionBudget"}
    sts, cm = docs["StatefulSet"], docs["ConfigMap"]
    pod = sts["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    env = {e["name"]: e for e in ctr["env"]}
    # The ConfigMap's config.toml loads with the daemon's own loader, with the pod's env.
    toml_path = Path(ctr["args"][ctr["args"].index("--config") + 1])
    mount = next(m for m in ctr["volumeMounts"] if m["name"] == "config")
    assert toml_path.parent == Path(mount["mountPath"])
    text = cm["data"][toml_path.name]
    tomllib.loads(text)
    shard = env["INGESTOR_SERVICE__SHARD"]["value"]
    config = _load_text(text, {"INGESTOR_SERVICE__SHARD": shard})
    # No service-link variables (INGESTOR_*_SERVICE_HOST of Services named ingestor-*); the
    # loader ignores them anyway (tests/ingestor/test_config.py)
    assert pod["enableServiceLinks"] is False
    assert config.health.host == "0.0.0.0" and config.mongodb.uri == ""
    # auto/N with N = replicas; the URI from the Secret's key; probes on the real paths/port.
    assert shard == f"auto/{sts['spec']['replicas']}"
    ref = env["INGESTOR_MONGODB__URI"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == docs["Secret"]["metadata"]["name"]
    assert ref["key"] in docs["Secret"]["stringData"]
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["ports"][0]["containerPort"] == config.health.port
    data = next(m for m in ctr["volumeMounts"] if m["name"] == "data")
    assert data["mountPath"] == config.service.data_dir
    assert sts["spec"]["serviceName"] == docs["Service"]["metadata"]["name"]
    assert pod["terminationGracePeriodSeconds"] > config.service.shutdown_timeout_s


def test_k8s_network_policy_admits_monitoring_and_the_daemons_peers_only() -> None:
    k8s = REPO / "deploy" / "k8s"
    docs = {d["kind"]: d for f in sorted(k8s.glob("*.yaml")) for d in _yaml(f)}
    sts, policy = docs["StatefulSet"], docs["NetworkPolicy"]
    pod = sts["spec"]["template"]
    (ctr,) = pod["spec"]["containers"]
    labels = pod["metadata"]["labels"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # In: the monitoring namespace only, the health port only.
    (rule,) = spec["ingress"]
    (peer,) = rule["from"]
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    (port,) = rule["ports"]
    (http,) = [p for p in ctr["ports"] if port["port"] in (p["name"], p["containerPort"])]
    config = _load_text(docs["ConfigMap"]["data"]["config.toml"], {})
    assert http["containerPort"] == config.health.port and port["protocol"] == "TCP"
    # Out: DNS, the exchange's ports, MongoDB's; nothing else.
    allowed = {(p["protocol"], p["port"]) for r in spec["egress"] for p in r["ports"]}
    urls = (config.exchange.ws_url, config.exchange.rest_url, config.positions.futures_ws_url)
    needed = {("TCP", urlsplit(u).port or 443) for u in urls}  # wss/https
    mongo = docs["Secret"]["stringData"]["uri"].partition("@")[2].partition("/")[0]
    needed |= {("TCP", int(h.partition(":")[2] or 27017)) for h in mongo.split(",")}
    assert needed | {("UDP", 53), ("TCP", 53)} == allowed, allowed
    dns = next(r for r in spec["egress"] if {"protocol": "UDP", "port": 53} in r["ports"])
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_compose_and_dockerfile_agree_with_the_daemon() -> None:
    (compose,) = _yaml(REPO / "docker-compose.yml")
    ing, mongo = compose["services"]["ingestor"], compose["services"]["mongo"]
    assert "--replSet" in mongo["command"] and "rs.initiate" in " ".join(
        mongo["healthcheck"]["test"]
    )
    assert ing["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert "replicaSet=rs0" in ing["environment"]["INGESTOR_MONGODB__URI"]
    _load_text((REPO / "config.toml").read_text(), dict(ing["environment"]))
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["ingestor"]' in dockerfile
    assert 'CMD ["run", "--config", "/etc/ingestor/config.toml"]' in dockerfile
    assert "/healthz" in dockerfile and "USER " in dockerfile
    unit = (REPO / "deploy" / "systemd" / "ingestor.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit
    assert "ingestor run --config /etc/ingestor/config.toml" in unit

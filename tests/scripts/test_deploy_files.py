"""The committed operations files: generated without drift, loadable, and well formed.

deploy/grafana/ingestor.json (scripts/dashboard.py) and the alerting rules
(scripts/rules.py: deploy/prometheus/ingestor-rules.yaml, deploy/k8s/monitoring/...). Whether
the metric names they read are exported is checked against a running daemon in
tests/integration/test_observability.py.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel
from grafana_foundation_sdk.models.prometheus import Dataquery

from scripts import dashboard, rules
from tests.conftest import REPO
from tests.scripts.deploy_exprs import (
    DASHBOARD,
    RULES,
    dashboard_exprs,
    metric_names,
    parse,
    rule_exprs,
)


def test_committed_dashboard_is_what_the_script_generates() -> None:
    assert DASHBOARD.read_text() == dashboard.render(), "run `make dashboard` and commit"


def test_dashboard_loads_with_the_sdk_model() -> None:
    raw = json.loads(DASHBOARD.read_text())
    register_default_plugins()  # panel options and Prometheus queries load as their own types
    model = Dashboard.from_json(raw)
    # Loading fills defaults of the panel plugins, so compare what the dashboard says, not bytes.
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    facts = ("type", "title", "description", "gridPos", "targets", "transformations")
    assert [{k: p.get(k) for k in facts} for p in again["panels"]] == [
        {k: p.get(k) for k in facts} for p in raw["panels"]
    ]
    assert model.uid == "bot-core-ingestor"
    variables = {v.name: v for v in model.templating.list_val or []}
    assert set(variables) == {"datasource", "instance"}
    assert variables["datasource"].query == "prometheus"
    panels = [p for p in model.panels or [] if isinstance(p, Panel)]
    rows = [p for p in model.panels or [] if isinstance(p, RowPanel)]
    assert len(rows) == 5 and len(panels) == 11
    ids = [p["id"] for p in raw["panels"]]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    for p in panels:
        # Every panel says what a bad value means, and reads the chosen datasource and shard.
        assert p.description and "Bad:" in p.description, p.title
        assert p.datasource is not None and p.datasource.uid == "${datasource}", p.title
        assert p.targets, p.title
        for t in p.targets:
            assert isinstance(t, Dataquery), (p.title, t)
            assert '{instance=~"$instance"}' in t.expr, (p.title, t.expr)


def test_dashboard_has_every_panel_the_issue_asks_for() -> None:
    titles = " | ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for words in (
        "readiness per daemon",
        "stream lag by symbol x timeframe",
        "commit latency p50 / p99",
        "klines stored per second",
        "rest klines",
        "rejects by reason",
        "reconnects by connection",
        "journal and queue depth",
        "database up",
        "positions refresh duration",
        "margin alerts written",
    ):
        assert words in titles


def test_every_expression_parses_as_promql() -> None:
    exprs = dashboard_exprs() + rule_exprs()
    assert len(exprs) >= 25
    for expr in exprs:
        parse(expr)  # raises on anything promql-parser rejects
        assert metric_names(expr), f"reads no metric: {expr}"


def test_promql_parser_rejects_what_prometheus_rejects() -> None:
    """The check above would be empty if the parser accepted anything."""
    for bad in ("rate(ingestor_ready[5m]", "sum by (le ingestor_ready", "ingestor_ready{a=}"):
        with pytest.raises(ValueError):
            parse(bad)


def test_committed_rule_files_are_what_the_script_generates() -> None:
    for path, text in rules.render().items():
        assert path.read_text() == text, f"{path}: run `make rules` and commit"


def _runbook_anchors() -> set[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.partition("\n## Runbook\n")[2].partition("\n## ")[0]
    assert section, "README.md has no `## Runbook` section"
    headings = re.findall(r"^### (.+)$", section, flags=re.MULTILINE)
    # GitHub's heading anchors: lower case, punctuation dropped, spaces -> "-".
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_rule_has_for_severity_summary_and_a_runbook_section() -> None:
    doc = yaml.safe_load(RULES.read_text())
    operator = yaml.safe_load(
        (REPO / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml").read_text()
    )
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"]["groups"] == doc["groups"]
    anchors = _runbook_anchors()
    alerts = [r for g in doc["groups"] for r in g["rules"]]
    names = [r["alert"] for r in alerts]
    assert len(set(names)) == len(names)
    for r in alerts:
        assert re.fullmatch(r"\d+[smh]", r["for"]), r
        assert r["labels"]["severity"] in ("critical", "warning"), r
        assert r["annotations"]["summary"] and r["annotations"]["description"], r
        url = r["annotations"]["runbook_url"]
        assert url.startswith(rules.RUNBOOK_BASE + "#"), url
        assert url.partition("#")[2] in anchors, f"README ## Runbook lacks ### {r['alert']}"
    # The conditions the README's metrics section lists, and the ones other issues add.
    for alert in (
        "IngestorStreamLagging",
        "IngestorNotReady",
        "IngestorFeedReconnecting",
        "IngestorJournalBacklog",
        "IngestorCommitLatencyHigh",
        "IngestorDatabasePermanentError",
        "IngestorJournalSetAside",
        "IngestorRetentionDeletesFailing",
    ):
        assert alert in names

"""The PromQL of the committed dashboard and rule files, and the metric names it reads.

Shared by the deploy-file tests (every expression parses) and the integration test that
compares the names with what a running daemon exports on /metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from tests.conftest import REPO

__all__ = [
    "DASHBOARD",
    "PROMETHEUS_SYNTHESIZED",
    "RULES",
    "dashboard_exprs",
    "exported_names",
    "metric_names",
    "parse",
    "rule_exprs",
    "variable_metric_names",
]

DASHBOARD = REPO / "deploy" / "grafana" / "ingestor.json"
RULES = REPO / "deploy" / "prometheus" / "ingestor-rules.yaml"

#: Series Prometheus itself writes for every target (not the daemon's to export). Permanent.
PROMETHEUS_SYNTHESIZED = frozenset({"up"})

#: Grafana's own variables, replaced by what Grafana would put there before parsing.
_GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _walk_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _walk_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_exprs(item)


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    """Every query of every panel (and the variable's query is checked apart)."""
    return list(_walk_exprs(json.loads(path.read_text())["panels"]))


def variable_metric_names(path: Path = DASHBOARD) -> set[str]:
    """Metrics the dashboard's query variables read (``label_values(metric, label)``)."""
    names = set()
    for var in json.loads(path.read_text())["templating"]["list"]:
        query = var.get("query")
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+), *\w+\)", str(query))
            assert match, f"variable {var['name']}: unexpected query {query!r}"
            names.add(match[1])
    return names


def rule_exprs(path: Path = RULES) -> list[str]:
    return [r["expr"] for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def parse(expr: str) -> promql_parser.Expr:
    """Parse with Grafana's variables substituted; raises ValueError on bad PromQL."""
    for var, value in _GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return promql_parser.parse(expr)


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(parse(expr), visit)
    return names


def exported_names(families: Iterator[Any]) -> set[str]:
    """Series names a /metrics scrape offers, families without samples included (a counter's
    ``_total``, a histogram's ``_bucket``/``_sum``/``_count``)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for fam in families:
        names.update(fam.name + s for s in suffixes.get(fam.type, ("",)))
        names.update(s.name for s in fam.samples)
    return names

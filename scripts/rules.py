"""`make rules`: the ingestor's Prometheus alerting rules, written twice from one list.

* deploy/prometheus/ingestor-rules.yaml: a rule file for Prometheus' `rule_files:`;
* deploy/k8s/monitoring/prometheusrule.yaml: the same groups as an Operator `PrometheusRule`.

Both are committed; a test regenerates them and finds no drift (`--check` exits 1 when they
differ). Every alert has a `for:`, a severity, a summary and a `runbook_url` pointing at its
subsection of the README's `## Runbook` (the heading is the alert's name). RUNBOOK_BASE is where
the README is served: change it (or pass `--runbook-base`) for your repository's address.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ALERTS", "RULES_FILE", "RUNBOOK_BASE", "groups", "render"]

ROOT = Path(__file__).resolve().parents[1]
RULES_FILE = ROOT / "deploy" / "prometheus" / "ingestor-rules.yaml"
# A subdirectory: `kubectl apply -f deploy/k8s/` works on clusters without the Operator.
OPERATOR_FILE = ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
RUNBOOK_BASE = "https://github.com/bot-core/ingestor/blob/main/README.md"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str  # critical: pages someone; warning: a ticket for working hours
    summary: str
    description: str


ALERTS: tuple[Alert, ...] = (
    Alert(
        "IngestorDown",
        "up == 0 and on (job, instance) max_over_time(ingestor_build_info[1d]) == 1",
        "2m",
        "critical",
        "Ingestor {{ $labels.instance }} is not answering scrapes",
        "The target exported ingestor metrics within a day and has not answered /metrics for "
        "2 minutes: its shard's symbols are not ingested.",
    ),
    Alert(
        "IngestorNotReady",
        "ingestor_ready == 0",
        "5m",
        "critical",
        "Ingestor {{ $labels.instance }} has not been ready for 5 minutes",
        "/readyz answers 503: the database, a feed connection or a stream's freshness check "
        "fails, or the startup catch-up is not done. `ingestor status` says which.",
    ),
    Alert(
        "IngestorDatabaseDown",
        "ingestor_database_up == 0",
        "2m",
        "critical",
        "Ingestor {{ $labels.instance }} cannot reach its database",
        "Pings fail or the last write failed; batches accumulate in the on-disk journal.",
    ),
    Alert(
        "IngestorDatabasePermanentError",
        "max by (job, instance, component, reason) (ingestor_permanent_error) == 1",
        "1m",
        "critical",
        "Ingestor {{ $labels.instance }}: {{ $labels.component }} blocked by a permanent error "
        "({{ $labels.reason }})",
        "A component (database, schema, feed, exchange) meets an error retrying cannot fix "
        "(e.g. Unauthorized, a refused handshake). It is re-checked slowly; nothing new is "
        "stored until an operator fixes it; the journal holds what was received.",
    ),
    Alert(
        "IngestorStreamLagging",
        "max by (job, instance) (ingestor_stream_lag_seconds) > 300",
        "5m",
        "critical",
        "Ingestor {{ $labels.instance }}: a stream is {{ $value | humanizeDuration }} behind",
        "At least one stream has closed klines that were due in the database more than "
        "5 minutes ago (exchange time).",
    ),
    Alert(
        "IngestorJournalBacklog",
        "ingestor_journal_depth > 0",
        "5m",
        "warning",
        "Ingestor {{ $labels.instance }}: {{ $value }} batches wait in the journal",
        "Batches have been journaled but not acknowledged by the database for 5 minutes.",
    ),
    Alert(
        "IngestorJournalSetAside",
        "increase(ingestor_journal_damaged_regions_total[1h]) > 0",
        "1m",
        "warning",
        "Ingestor {{ $labels.instance }} set aside a damaged journal tail",
        "At a start the journal ended in a damaged record, which was moved aside; klines it "
        "held may be missing until filled again.",
    ),
    Alert(
        "IngestorCommitLatencyHigh",
        "histogram_quantile(0.99, sum by (job, instance, le) "
        "(rate(ingestor_commit_latency_seconds_bucket[5m]))) > 5",
        "10m",
        "warning",
        "Ingestor {{ $labels.instance }}: p99 close-to-commit latency is "
        "{{ $value | humanizeDuration }}",
        "Candles reach the database more than 5 s after their close (p99 over 5 minutes).",
    ),
    Alert(
        "IngestorFeedReconnecting",
        "increase(ingestor_feed_reconnects_total[10m]) > 5",
        "1m",
        "warning",
        "Ingestor {{ $labels.instance }}: connection {{ $labels.connection }} reconnected "
        '{{ $value | printf "%.0f" }} times in 10 minutes',
        "A websocket connection keeps dropping; every reconnect costs REST gap fills.",
    ),
    Alert(
        "IngestorRejectsRising",
        "sum by (job, instance, reason) (rate(ingestor_rejects_total[10m])) > 0.1",
        "15m",
        "warning",
        "Ingestor {{ $labels.instance }} rejects input: {{ $labels.reason }}",
        "More than 6 rejects a minute of one reason for 15 minutes.",
    ),
    Alert(
        "IngestorRetentionDeletesFailing",
        "increase(ingestor_retention_delete_failures_total[1h]) > 0",
        "30m",
        "warning",
        "Ingestor {{ $labels.instance }}: retention deletes on the embedded database fail",
        "The embedded server does not expire time-series data itself; the daemon's own "
        "retention deletes fail, so market_data grows past 90 days.",
    ),
)


def anchor(name: str) -> str:
    """The README heading's anchor: the alert name as GitHub slugs a heading."""
    return name.lower()


def groups(runbook_base: str = RUNBOOK_BASE) -> list[dict[str, Any]]:
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            "labels": {"severity": a.severity},
            "annotations": {
                "summary": a.summary,
                "description": a.description,
                "runbook_url": f"{runbook_base}#{anchor(a.name)}",
            },
        }
        for a in ALERTS
    ]
    return [{"name": "ingestor", "rules": rules}]


def _dump(doc: Any) -> str:
    return str(yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True))


def render(runbook_base: str = RUNBOOK_BASE) -> dict[Path, str]:
    """File -> its text."""
    head = "# Generated by scripts/rules.py (make rules); do not edit by hand.\n"
    operator = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "ingestor",
            "labels": {
                "app.kubernetes.io/name": "ingestor",
                "app.kubernetes.io/part-of": "bot-core",
            },
        },
        "spec": {"groups": groups(runbook_base)},
    }
    return {
        RULES_FILE: head + _dump({"groups": groups(runbook_base)}),
        OPERATOR_FILE: head
        + "# The Prometheus Operator picks it up when its ruleSelector matches these labels.\n"
        + _dump(operator),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file would change")
    parser.add_argument("--runbook-base", default=RUNBOOK_BASE, help="where README.md is served")
    args = parser.parse_args(argv)
    stale = 0
    for path, text in render(args.runbook_base).items():
        if args.check:
            same = path.is_file() and path.read_text() == text
            stale += not same
            print(f"{path}: {'up to date' if same else 'differs: run make rules'}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

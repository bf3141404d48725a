"""`make dashboard`: the Grafana dashboard of the ingestor, as code (grafana-foundation-sdk).

Writes deploy/grafana/ingestor.json (committed; a test regenerates it and finds no drift).
`python scripts/dashboard.py --check` exits 1 when the committed file differs.

Every panel is one entry of ROWS: a title, what a bad value means (its description), a unit and
its PromQL queries. Every query selects `{instance=~"$instance"}` (one daemon = one shard = one
scrape target) and reads the `$datasource` variable's Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = ["OUT", "ROWS", "build", "render"]

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "ingestor.json"
UID = "bot-core-ingestor"
SEL = '{instance=~"$instance"}'
RATE = "$__rate_interval"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "{{instance}}"


@dataclass(frozen=True)
class P:
    """One panel: ``kind`` picks the visualisation."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: Literal["timeseries", "readiness", "lag_table"] = "timeseries"
    width: int = 12
    thresholds: tuple[tuple[float | None, str], ...] = field(default=())


def _quantiles(metric: str, by: str = "instance") -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{SEL}[{RATE}])))",
            f"p{round(q * 100)} {{{{instance}}}}",
        )
        for q in (0.5, 0.99)
    )


ROWS: tuple[tuple[str, tuple[P, ...]], ...] = (
    (
        "Readiness: is every daemon serving?",
        (
            P(
                "Readiness per daemon",
                "1: /readyz answers 200 (database answers, every feed connection up, no stream "
                "lagging beyond its grace, startup catch-up done). Bad: 0 for more than a few "
                "minutes - the daemon is degraded or still catching up; `ingestor status --url "
                "http://<pod>:8080` says which check failed. A daemon missing here is not scraped "
                "at all (down, or its target is gone).",
                (Query(f"ingestor_ready{SEL}"),),
                kind="readiness",
                width=8,
            ),
            P(
                "Database up, permanent errors, retention deletes failing",
                "database up: 1 while the database answers pings and the last write succeeded. "
                "Bad: 0 - candles wait in the journal on disk (see journal depth), nothing new "
                "reaches market_data. permanent error: 1 while the database refuses with an error "
                "retrying cannot fix (e.g. Unauthorized; the label says which) - fix credentials "
                "or roles, the daemon will not heal it. retention delete failures: above 0 means "
                "the embedded server's self-run 90-day retention is failing and market_data grows.",
                (
                    Query(f"ingestor_database_up{SEL}", "up {{instance}}"),
                    Query(
                        f"ingestor_permanent_error{SEL}",
                        "permanent error {{component}}: {{reason}} {{instance}}",
                    ),
                    Query(
                        f"increase(ingestor_retention_delete_failures_total{SEL}[{RATE}])",
                        "retention delete failures {{instance}}",
                    ),
                ),
                width=16,
            ),
        ),
    ),
    (
        "Freshness: are the streams current?",
        (
            P(
                "Stream lag by symbol x timeframe",
                "Exchange seconds since the first closed kline that is not stored yet (worst "
                "daemon). 0: up to date. Bad: more than the stream's grace (final_grace_ms + "
                "linger_ms + 10 s; yellow past 60 s, red past 300 s) - the stream is behind: its "
                "connection is down, REST gap fills are failing or throttled, or the database is "
                "not taking writes. An empty cell: nothing stored yet for that stream.",
                (Query(f"max by (symbol, timeframe) (ingestor_stream_lag_seconds{SEL})", ""),),
                unit="s",
                kind="lag_table",
                thresholds=((None, "green"), (60, "yellow"), (300, "red")),
            ),
            P(
                "Commit latency p50 / p99 (kline close to acknowledged insert)",
                "Real seconds from a kline's close on the exchange to the database acknowledging "
                "its insert, per candle. Healthy: tens of milliseconds. Bad: p99 above a few "
                "seconds for minutes (the alert fires at 5 s for 10 m) - the database is slow or "
                "the daemon is overloaded; minutes or hours mean candles came late from REST "
                "(catch-up after a restart or an outage).",
                _quantiles("ingestor_commit_latency_seconds"),
                unit="s",
            ),
        ),
    ),
    (
        "Throughput: what is stored, from where, and what is refused",
        (
            P(
                "Klines stored per second",
                "Candles the database acknowledged per second. Expected: about the number of "
                "streams divided by their timeframes' seconds, in steps at each minute. Bad: 0 "
                "while the feed is up (nothing reaches the database), or a lasting drop below the "
                "usual rate (streams stopped).",
                (Query(f"sum by (instance) (rate(ingestor_candles_inserted_total{SEL}[{RATE}]))"),),
                unit="ops",
                width=8,
            ),
            P(
                "REST klines per second",
                "Closed klines fetched from REST (startup catch-up, gap fills, late finals). "
                "Expected: bursts after a start or reconnect, then 0. Bad: a steady rate - the "
                "websocket keeps missing klines or finals (network trouble, exchange issues), "
                "spending REST weight.",
                (Query(f"sum by (instance) (rate(ingestor_rest_klines_total{SEL}[{RATE}]))"),),
                unit="ops",
                width=8,
            ),
            P(
                "Rejects by reason",
                "Input refused per second, by reason code (malformed frames, rule-breaking "
                "candles, repeats, unknown streams). Bad: a sustained rate of any reason - the "
                "exchange or something in between sends bad data; samples are in the "
                "market_data_rejects collection.",
                (
                    Query(
                        f"sum by (reason) (rate(ingestor_rejects_total{SEL}[{RATE}]))", "{{reason}}"
                    ),
                ),
                unit="ops",
                width=8,
            ),
        ),
    ),
    (
        "Feed and pipeline: connections, journal, queues",
        (
            P(
                "Reconnects by connection",
                "Websocket reconnects per connection in each interval. Expected: one per "
                "connection every 23.5 h (planned rollover). Bad: more than a few in 10 minutes "
                "(the alert: more than 5) - network trouble, the exchange closing connections, "
                "or the daemon too busy to read frames (silence timeouts).",
                (
                    Query(
                        "sum by (instance, connection) "
                        f"(increase(ingestor_feed_reconnects_total{SEL}[{RATE}]))",
                        "{{instance}} #{{connection}}",
                    ),
                ),
            ),
            P(
                "Journal and queue depth",
                "journal: batches written ahead to disk and not yet acknowledged by the "
                "database; 0 or briefly 1-2 is normal. Bad: above 0 for minutes and growing - the "
                "database is down or slow; the data is safe on disk until it answers. queue: "
                "items in a bounded queue; near its capacity means the stage after it cannot "
                "keep up. journal set aside: above 0 means a damaged journal tail was moved "
                "aside at a start; see the runbook.",
                (
                    Query(f"ingestor_journal_depth{SEL}", "journal {{instance}}"),
                    Query(f"ingestor_queue_depth{SEL}", "queue {{queue}} {{instance}}"),
                    Query(f"ingestor_queue_capacity{SEL}", "capacity {{queue}} {{instance}}"),
                    Query(
                        f"increase(ingestor_journal_damaged_regions_total{SEL}[{RATE}])",
                        "journal set aside {{instance}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Positions: P&L refresh and margin alerts",
        (
            P(
                "Positions refresh duration p50 / p99",
                "Duration of one refresh of the open positions from the latest prices. Bad: "
                "p99 near or above positions.refresh_ms (1 s by default) - ticks fall behind and "
                "P&L and margin ratios reach users late. No data: the positions loop is disabled "
                "or has not run.",
                _quantiles("ingestor_positions_refresh_seconds"),
                unit="s",
            ),
            P(
                "Margin alerts written",
                "Margin alerts (a notification and an audit log each) written per interval, "
                "once per position crossing below the alert threshold. A burst follows a sharp "
                "market move. Bad: a burst with no matching notifications for users, or none for "
                "hours while margins are known to be low (check the refresh duration).",
                (
                    Query(
                        "sum by (instance) "
                        f"(increase(ingestor_positions_alerts_written_total{SEL}[{RATE}]))"
                    ),
                ),
            ),
        ),
    ),
)


def _target(q: Query, ref: str, instant: bool) -> prometheus.Dataquery:
    t = prometheus.Dataquery().expr(q.expr).legend_format(q.legend).ref_id(ref)
    t = t.datasource(DATASOURCE)
    if instant:
        t = t.instant().format(PromQueryFormat.TABLE)
    return t


def _panel(p: P, panel_id: int) -> stat.Panel | table.Panel | timeseries.Panel:
    builder: stat.Panel | table.Panel | timeseries.Panel
    if p.kind == "readiness":  # 0/1 as words
        builder = (
            stat.Panel()
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .graph_mode(common.BigValueGraphMode.NONE)
            .mappings(
                [
                    model.ValueMap(
                        {
                            "0": model.ValueMappingResult(text="NOT READY", color="red"),
                            "1": model.ValueMappingResult(text="ready", color="green"),
                        }
                    )
                ]
            )
        )
    elif p.kind == "lag_table":
        builder = table.Panel().with_transformation(
            model.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"columnField": "timeframe", "rowField": "symbol", "valueField": "Value"},
            )
        )
    else:
        builder = (
            timeseries.Panel()
            .legend(
                VizLegendOptions()
                .display_mode(common.LegendDisplayMode.TABLE)
                .placement(common.LegendPlacement.BOTTOM)
                .show_legend(True)
                .calcs(["lastNotNull", "max"])
            )
            .fill_opacity(10)
        )
    builder = (
        builder.id(panel_id)
        .title(p.title)
        .description(p.description)
        .datasource(DATASOURCE)
        .unit(p.unit)
        .span(p.width)
        .height(8)
    )
    if p.thresholds:
        builder = builder.thresholds(
            db.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value, color) for value, color in p.thresholds])
        ).color_scheme(db.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
    instant = p.kind == "lag_table"
    for i, q in enumerate(p.queries):
        builder = builder.with_target(_target(q, chr(ord("A") + i), instant))
    return builder


def build() -> model.Dashboard:
    d = (
        db.Dashboard("bot-core ingestor")
        .uid(UID)
        .description(
            "Market-data ingestion daemons: readiness, freshness, throughput, feed, journal, "
            "positions. Generated by scripts/dashboard.py; do not edit by hand."
        )
        .tags(["bot-core", "ingestor"])
        .timezone("utc")
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            db.QueryVariable("instance")
            .label("shard (instance)")
            .description("One daemon per scrape target: a shard of the symbols.")
            .datasource(DATASOURCE)
            .query("label_values(ingestor_build_info, instance)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    ids = iter(range(1, 1000))  # Grafana wants every panel (rows too) to have its own id
    for title, panels in ROWS:
        d = d.with_row(db.Row(title).id(next(ids)))
        for p in panels:
            d = d.with_panel(_panel(p, next(ids)))
    return d.build()


def render() -> str:
    """The dashboard's JSON text, stable byte for byte."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file would change")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = OUT.is_file() and OUT.read_text() == text
        print(f"{OUT}: {'up to date' if same else 'differs: run make dashboard'}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

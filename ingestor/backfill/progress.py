"""Progress of a backfill: rich bars on a terminal, plain log lines otherwise.

On a terminal: one bar overall and one per stream being filled (klines done/total, rate, ETA);
finished streams are hidden. Not a terminal (CI, a log file): one log line every
``every_s`` seconds and one at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from ingestor.backfill.run import StreamPlan

__all__ = ["LogProgress", "RichProgress", "make_progress"]

log = logging.getLogger("ingestor.backfill")


class _Totals:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.total = 0
        self.done = 0
        self.t0 = clock()
        self.left: dict[int, int] = {}

    def start(self, plans: list[StreamPlan]) -> None:
        self.left = {p.stream_id: p.missing_klines for p in plans}
        self.total = sum(self.left.values())
        self.t0 = self.clock()

    def rate(self) -> float:
        dt = self.clock() - self.t0
        return self.done / dt if dt > 0 else 0.0


class LogProgress:
    """A log line every ``every_s`` seconds: klines done/total, rate, ETA."""

    def __init__(self, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._t = _Totals(clock)
        self._every = every_s
        self._last = 0.0

    def start(self, plans: list[StreamPlan]) -> None:
        self._t.start(plans)
        self._last = self._t.clock()
        log.info("backfill: %d klines to fetch over %d streams", self._t.total, len(plans))

    def advance(self, stream_id: int, klines: int) -> None:
        t = self._t
        t.done += klines
        t.left[stream_id] = t.left.get(stream_id, 0) - klines
        if t.clock() - self._last >= self._every:
            self._last = t.clock()
            self._line()

    def _line(self) -> None:
        t = self._t
        rate = t.rate()
        eta = (t.total - t.done) / rate if rate > 0 else float("nan")
        active = sum(1 for v in t.left.values() if v > 0)
        log.info(
            "backfill: %d/%d klines (%.0f%%), %.0f klines/s, ETA %.0fs, %d streams left",
            t.done, t.total, 100 * t.done / max(t.total, 1), rate, eta, active,
        )  # fmt: skip

    def finish(self) -> None:
        self._line()


class RichProgress:
    """Rich bars on stderr: overall plus one per unfinished stream."""

    def __init__(self, console: Console | None = None) -> None:
        self._bars = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._overall: TaskID | None = None
        self._tasks: dict[int, TaskID] = {}
        self._t = _Totals(time.monotonic)

    def start(self, plans: list[StreamPlan]) -> None:
        self._t.start(plans)
        self._bars.start()
        self._overall = self._bars.add_task("all streams", total=self._t.total, rate="")
        for p in plans:
            self._tasks[p.stream_id] = self._bars.add_task(
                str(p.key), total=p.missing_klines, rate=""
            )

    def advance(self, stream_id: int, klines: int) -> None:
        t = self._t
        t.done += klines
        t.left[stream_id] = t.left.get(stream_id, 0) - klines
        rate = f"{t.rate():,.0f} klines/s"
        task = self._tasks.get(stream_id)
        if task is not None:
            self._bars.update(task, advance=klines, visible=t.left[stream_id] > 0)
        if self._overall is not None:
            self._bars.update(self._overall, advance=klines, rate=rate)

    def finish(self) -> None:
        self._bars.stop()


def make_progress(tty: bool) -> LogProgress | RichProgress:
    return RichProgress() if tty else LogProgress()

"""Standing permanent failures, per component: what readiness, ``/status`` and metrics show.

A component (``database``, ``feed``, ``exchange``, ``schema``) that meets a permanent failure
(``ingestor.retry.classify``) reports it here: the first report of a reason logs one ERROR line,
repeats are only counted, and readiness stays red with the reason until the component reports
success (:meth:`Failures.clear`, which logs the recovery once).
"""

from __future__ import annotations

import logging
from collections import Counter

from ingestor.retry import Verdict

__all__ = ["Failures"]

log = logging.getLogger(__name__)


class Failures:
    """Component -> the reason it is blocked; counts of every report for ``/metrics``."""

    def __init__(self) -> None:
        self._standing: dict[str, Verdict] = {}
        #: (component, reason) -> reports, published as ``ingestor_permanent_errors_total``.
        self.counts: Counter[tuple[str, str]] = Counter()

    def report(self, component: str, verdict: Verdict, hint: str = "") -> bool:
        """Record a permanent failure; True (and one log line) when it is new."""
        self.counts[(component, verdict.reason)] += 1
        old = self._standing.get(component)
        self._standing[component] = verdict
        if old is not None and old.reason == verdict.reason:
            return False
        log.error(
            "%s: permanent failure, not retrying until fixed (re-checked slowly): %s%s",
            component,
            verdict,
            f"; {hint}" if hint else "",
        )
        return True

    def clear(self, component: str) -> None:
        """The component works again."""
        if self._standing.pop(component, None) is not None:
            log.info("%s: recovered from its permanent failure", component)

    def reasons(self) -> dict[str, str]:
        """Component -> ``reason: detail`` of every standing failure."""
        return {c: str(v) for c, v in sorted(self._standing.items())}

    def standing(self) -> dict[str, str]:
        """Component -> reason code of every standing failure (``ingestor_permanent_error``)."""
        return {c: v.reason for c, v in sorted(self._standing.items())}

    def __bool__(self) -> bool:
        return bool(self._standing)

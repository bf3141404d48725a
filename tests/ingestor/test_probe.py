"""The probe is the one module health and metrics share: importing one never imports the other
(nor the service), each checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def _imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("ingestor.health", {"ingestor.service", "ingestor.metrics", "ingestor.assemble"}),
        ("ingestor.metrics", {"ingestor.health", "ingestor.service", "ingestor.assemble"}),
        ("ingestor.probe", {"ingestor.health", "ingestor.metrics", "ingestor.service"}),
    ],
)
def test_health_metrics_and_probe_do_not_import_each_other(module: str, never: set[str]) -> None:
    imported = _imported_after(module)
    assert module in imported
    assert not never & imported

"""`ingestor run` as a real process: a bad config stops startup with exit code 2 naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TIMEOUT_FACTOR

CASES = [
    ('[ingest]\ntimeframes = ["1m", "2m"]\n', "ingest.timeframes"),
    ('[exchange]\nws_url = "http//nope"\n', "exchange.ws_url"),
    ('[ingest]\nmax_batch = "many"\n', "ingest.max_batch"),
    ('[mongodb]\nurl = "mongodb://x"\n', "mongodb.url"),
]


@pytest.mark.parametrize(("text", "key"), CASES)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "ingestor", "run", "--config", str(conf)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60 * TIMEOUT_FACTOR,
    )
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr


def test_env_override_is_validated_too(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ingestor", "run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60 * TIMEOUT_FACTOR,
        env={"INGESTOR_HEALTH__PORT": "99999", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "health.port" in proc.stderr

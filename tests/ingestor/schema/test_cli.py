"""``ingestor schema apply|verify`` as a real process (``python -m ingestor schema``), and the
same command line called in this process (``ingestor.cli.main``)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from ingestor.cli import main
from tests.conftest import REPO, TIMEOUT_FACTOR


def _config(tmp_path: Path, uri: str, db: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[mongodb]\nuri = "{uri}"\ndatabase = "{db}"\n')
    return path


def _schema(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestor", "schema", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60 * TIMEOUT_FACTOR,
        check=False,
    )


@pytest.mark.slow  # six ingestor processes in a row
def test_apply_verify_drift_migrate(
    tmp_path: Path, mongo_uri: str, db_name: str, sync_db: Any
) -> None:
    cfg = str(_config(tmp_path, mongo_uri, db_name))
    first = _schema("apply", "--config", cfg, "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["in_sync"] and len(out["changes"]) == out["collections"] == 18
    again = _schema("apply", "--config", cfg)
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout
    assert _schema("verify", "--config", cfg).returncode == 0

    sync_db.trades.drop_index("status_1")
    drift = _schema("verify", "--config", cfg, "--json")
    assert drift.returncode == 1
    report = json.loads(drift.stdout)
    assert not report["in_sync"]
    assert [(d["collection"], d["kind"]) for d in report["drift"]] == [("trades", "missing_index")]
    pending = _schema("apply", "--config", cfg)
    assert pending.returncode == 1 and "--migrate" in pending.stdout
    assert "status_1" not in sync_db.trades.index_information()
    fixed = _schema("apply", "--config", cfg, "--migrate")
    assert fixed.returncode == 0 and "migrated trades" in fixed.stdout, fixed.stdout
    assert "status_1" in sync_db.trades.index_information()
    assert _schema("verify", "--config", cfg).returncode == 0


def test_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[mongodb]\nuri = "http://nope"\n')
    done = _schema("verify", "--config", str(bad))
    assert done.returncode == 2 and "mongodb.uri" in done.stderr


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``main`` routes the root logger to its own handler: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_command_line_in_process(
    tmp_path: Path,
    mongo_uri: str,
    db_name: str,
    sync_db: Any,
    capsys: pytest.CaptureFixture[str],
    root_logging: None,
) -> None:
    cfg = str(_config(tmp_path, mongo_uri, db_name))
    assert main(["schema", "verify", "--config", cfg]) == 1  # empty: every collection missing
    assert "does not exist" in capsys.readouterr().out
    assert main(["schema", "apply", "--config", cfg]) == 0
    assert "now matches" in capsys.readouterr().out
    assert main(["schema", "verify", "--config", cfg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["in_sync"]
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        assert "users" in client[db_name].list_collection_names()
    finally:
        client.close()

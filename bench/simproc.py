"""The exchange simulator in its own process (``ingestor simulate``) for the benches: its CPU is
never the measured consumer's."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SimProcess"]

ROOT = Path(__file__).resolve().parent.parent


class SimProcess:
    """``ingestor simulate`` on a free port with ``symbols`` at ``speed``, started and answering
    ``/api/v3/ping`` when the constructor returns (``RuntimeError`` if it does not within
    ``start_timeout_s``); ``extra`` are more ``simulate`` arguments."""

    def __init__(
        self,
        symbols: Sequence[str],
        speed: float,
        extra: Sequence[str] = (),
        *,
        weight_limit: int = 1_000_000,
        start_timeout_s: float = 60.0,
    ) -> None:
        from ingestor.embedded import free_port

        self.port = free_port()
        self.speed = speed
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingestor", "simulate", "--port", str(self.port),
             "--symbols", ",".join(symbols), "--speed", str(speed), "--update-interval", "2",
             "--weight-limit", str(weight_limit), *extra],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.rest_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.rest_url}/api/v3/ping", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("simulator did not start") from None
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        """The simulator's counters (``GET /_sim/stats``)."""
        with urllib.request.urlopen(f"{self.rest_url}/_sim/stats", timeout=5) as r:
            out: dict[str, Any] = json.loads(r.read())
            return out

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

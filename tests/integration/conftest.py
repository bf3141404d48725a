from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.integration.harness import Daemon


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[[Path, Path], Daemon]]:
    """Make `ingestor run` daemons that are killed and reaped at teardown whatever the test did
    (one left running is garbage-collected during a later test: a ResourceWarning fails it)."""
    made: list[Daemon] = []

    def make(config: Path, log: Path) -> Daemon:
        made.append(Daemon(config, log))
        return made[-1]

    yield make
    for d in made:
        d.kill()
        if d.proc is not None:
            await d.proc.wait()

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.integration.harness import Daemon


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[[Path, Path], Daemon]]:
    """Make `ingestor run` daemons that are killed and reaped at teardown whatever the test did
    (on the test's own event loop: a daemon left to the garbage collector would fail a later
    test with a ResourceWarning)."""
    made: list[Daemon] = []

    def make(config: Path, log: Path) -> Daemon:
        made.append(Daemon(config, log))
        return made[-1]

    yield make
    for d in made:
        await d.kill()

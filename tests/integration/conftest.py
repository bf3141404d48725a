from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Daemon


@pytest.fixture
def spawn() -> Iterator[Callable[[Path, Path], Daemon]]:
    """Make `ingestor run` daemons that are killed at teardown whatever the test did."""
    made: list[Daemon] = []

    def make(config: Path, log: Path) -> Daemon:
        made.append(Daemon(config, log))
        return made[-1]

    yield make
    for d in made:
        d.kill()

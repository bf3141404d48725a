"""``python -m ingestor.simulator``: the simulator without the main ``ingestor`` CLI."""

from ingestor.simulator.cli import main

__all__: list[str] = []

raise SystemExit(main())

"""``python -m ingestor``: the ``ingestor`` command line itself (:func:`ingestor.cli.main`)."""

import sys

from ingestor.cli import main

__all__: list[str] = []

sys.exit(main())

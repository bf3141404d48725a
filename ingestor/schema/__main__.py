"""``python -m ingestor.schema apply|verify --config ...``."""

import sys

from ingestor.schema.cli import main

sys.exit(main())

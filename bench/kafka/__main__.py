"""Entry point: ``python -m bench.kafka [--rows N] [--partitions N] ...``."""

from __future__ import annotations

import sys

from bench.kafka.cli import main

if __name__ == "__main__":
    sys.exit(main())

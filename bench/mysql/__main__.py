"""Entry point: ``python -m bench.mysql [--tables N] [--table-size N] [--duration S] ...``."""

from __future__ import annotations

import sys

from bench.mysql.cli import main

if __name__ == "__main__":
    sys.exit(main())

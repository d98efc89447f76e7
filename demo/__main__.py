"""Entry point: ``python -m demo [--duration S] [--rate TX_PER_S] [--seed N]``."""

from __future__ import annotations

import sys

from demo.runner import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m demo setup ...` / `python -m demo run ...` (see `demo.cli`)."""

from __future__ import annotations

import sys

from demo.cli import main

if __name__ == "__main__":
    sys.exit(main())

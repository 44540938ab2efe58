"""`llmt ...` (the real CLI, in this process) with a batch provider that accepts every batch and never
finishes one, so that `llmt run --no-wait` times llmt's own work. Used by incremental.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llmt.runner
from benchmarks._common import HoldProvider
from llmt.cli import main


def _hold(*args: Any, **kwargs: Any) -> HoldProvider:
    return HoldProvider()


if __name__ == "__main__":
    llmt.runner.make_provider = _hold  # type: ignore[assignment]
    sys.argv = ["llmt", *sys.argv[1:]]
    main()

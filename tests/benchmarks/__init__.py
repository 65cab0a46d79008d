"""Smoke tests of benchmarks/. The scripts import their shared helpers as `common`, so the
folder goes on sys.path (as it is when a script runs from benchmarks/)."""

import sys
from pathlib import Path

_BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.insert(0, _BENCHMARKS)

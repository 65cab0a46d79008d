"""Smoke tests of benchmarks/. The scripts import their shared helpers as `common`, so the
folder goes on sys.path (as it is when a script runs from benchmarks/)."""

import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests._scripts import load_script

_BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.insert(0, _BENCHMARKS)


def load_benchmark(name: str, module_name: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> ModuleType:
    """benchmarks/<name>.py as a module, registered in sys.modules as `module_name` (default `name`),
    for the session or, given `monkeypatch`, until the test ends (see load_script). Another name
    keeps the script apart from the module its sibling scripts import under `name`."""
    return load_script(Path(_BENCHMARKS) / f"{name}.py", module_name or name, monkeypatch)

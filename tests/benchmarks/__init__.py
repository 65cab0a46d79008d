"""Smoke tests of benchmarks/. The scripts import their shared helpers as `common`, so the
folder goes on sys.path (as it is when a script runs from benchmarks/)."""

import sys
from pathlib import Path

_BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.insert(0, _BENCHMARKS)


def load_benchmark(name: str, module_name: str | None = None):
    """benchmarks/<name>.py as a module, registered in sys.modules as `module_name` (default `name`;
    dataclasses look their module up while the file executes). Another name keeps the script apart
    from the module its sibling scripts import under `name`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(module_name or name, Path(_BENCHMARKS) / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module

"""Loading one of the repository's scripts (benchmarks/, tools/) as a module of the test process,
so a test can call its functions and main(argv) without a subprocess."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_script(path: Path, module_name: str, monkeypatch: pytest.MonkeyPatch | None = None) -> ModuleType:
    """`path` executed as a module named `module_name`, registered in sys.modules before it runs
    (dataclasses look their module up while the file executes). With `monkeypatch` the registration
    is undone after the test; without, it stays for the session."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    if monkeypatch is None:
        sys.modules[module_name] = module
    else:
        monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    return module

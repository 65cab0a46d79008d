"""Shared test setup: deterministic, single-threaded CPU math and the official fixtures' path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# CI clones the repo with the team's shared/ folder beside it.
SHARED = Path(os.environ.get("COGVIDEOX_SAT_SHARED", REPO.parent / "shared"))
OFFICIAL_FIXTURES = SHARED / "fixtures" / "official"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    if not OFFICIAL_FIXTURES.is_dir():
        pytest.skip(f"official fixtures not found at {OFFICIAL_FIXTURES}")
    return OFFICIAL_FIXTURES


@pytest.fixture(autouse=True)
def _deterministic_torch():
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)

"""benchmarks/precision_run.py end to end on the tiny demo model (CPU, bf16): the table's numbers
come from a real train_video.py run with FusedEmaAdam and its saved weights and EMA."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_precision_run_tiny(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import precision_run

    (outcome,) = precision_run.main(["--tiny", "--work", str(tmp_path)])
    assert outcome.steps == 4 and outcome.finite and outcome.ema_updates == 4
    assert outcome.weights_finite and outcome.ema_finite and outcome.overflow == 0 and not outcome.scales

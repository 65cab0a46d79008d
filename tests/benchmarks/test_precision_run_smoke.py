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

    (outcome,) = precision_run.main(["--tiny", "--steps", "3", "--work", str(tmp_path), "--sample", "--plot", str(tmp_path / "loss.png")])
    assert outcome.steps == 3 and outcome.finite and outcome.ema_updates == 3
    assert outcome.weights_finite and outcome.ema_finite and outcome.overflow == 0 and not outcome.scales
    # --sample: the run drew its validation sample at the last step; --plot: the curves' PNG
    assert outcome.sample is not None and "iter_000003" in outcome.sample
    assert precision_run.sample_psnr(outcome.sample, outcome.sample) == float("inf")
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_reuse_resumes_a_stopped_run(tmp_path: Path) -> None:
    # a run that ended before --steps (here: a shorter earlier call) is continued from its
    # checkpoint by --reuse, not started again; its steps are counted once each
    sys.path.insert(0, str(REPO / "benchmarks"))
    import precision_run

    precision_run.main(["--tiny", "--steps", "2", "--work", str(tmp_path)])
    (run,) = (tmp_path / "2b_lora_bf16" / "runs").iterdir()
    (outcome,) = precision_run.main(["--tiny", "--steps", "4", "--work", str(tmp_path), "--reuse"])
    assert [p.name for p in (tmp_path / "2b_lora_bf16" / "runs").iterdir()] == [run.name]
    assert f"resumed from {run} at iteration 2" in (tmp_path / "2b_lora_bf16" / "train.log").read_text()
    assert outcome.steps == 4 and outcome.ema_updates == 4 and outcome.weights_finite and outcome.ema_finite
    assert [r["iteration"] for r in precision_run.step_records(run)] == [1, 2, 3, 4]

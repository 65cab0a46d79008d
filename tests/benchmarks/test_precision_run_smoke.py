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

    (outcome,) = precision_run.main(["--tiny", "--steps", "3", "--work", str(tmp_path), "--sample", "--plot", str(tmp_path / "loss.png"),
                                     "--summary", str(tmp_path / "out" / "summary.json")])
    assert outcome.steps == 3 and outcome.finite and outcome.ema_updates == 3
    assert outcome.weights_finite and outcome.ema_finite and outcome.overflow == 0 and not outcome.scales
    # --sample: the run drew its validation sample at the last step; --plot: the curves' PNG
    assert outcome.sample is not None and "iter_000003" in outcome.sample
    assert precision_run.sample_psnr(outcome.sample, outcome.sample) == float("inf")
    assert (tmp_path / "loss.png").stat().st_size > 0
    # --summary: the sample comes back beside it, named by its case
    assert (tmp_path / "out" / "summary-2b_lora_bf16.png").read_bytes() == Path(outcome.sample).read_bytes()


def test_a_run_stopped_by_sigterm_saves_and_reuse_finishes_it(tmp_path: Path) -> None:
    # what a budget stop or a preemption does mid-run: train_video.py saves the step it reached and
    # exits 75; precision_run reports it as stopped (not failed), and --reuse continues from there
    import os
    import signal
    import threading
    import time

    sys.path.insert(0, str(REPO / "benchmarks"))
    import precision_run
    from cogvideox_sat.training.metrics import read_metrics

    steps, outcomes = 400, []
    first = threading.Thread(target=lambda: outcomes.append(precision_run.main(["--tiny", "--steps", str(steps), "--work", str(tmp_path)])))
    first.start()
    case_work, deadline = tmp_path / "2b_lora_bf16", time.monotonic() + 300
    while time.monotonic() < deadline:  # until the run has logged a few steps
        runs = precision_run._run_dirs(case_work)
        if runs and (runs[0] / "metrics.jsonl").is_file() and sum("loss" in r for r in read_metrics(runs[0])) >= 3:
            break
        time.sleep(0.02)
    (pid,) = [int(line.split()[0]) for line in _children()]  # the train_video.py process
    os.kill(pid, signal.SIGTERM)
    first.join(timeout=120)
    ((stopped,),) = outcomes
    (run,) = precision_run._run_dirs(case_work)
    saved = int((run / "latest").read_text())
    assert 3 <= stopped.steps < steps and saved == stopped.steps  # saved the step it reached
    assert stopped.weights_finite and stopped.ema_finite

    (finished,) = precision_run.main(["--tiny", "--steps", str(steps), "--work", str(tmp_path), "--reuse"])
    assert f"resumed from {run} at iteration {saved}" in (case_work / "train.log").read_text()
    assert finished.steps == steps and finished.ema_updates == steps and finished.weights_finite and finished.ema_finite


def _children() -> list[str]:
    """`pid command` of this process's train_video.py children."""
    import os
    import subprocess

    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if "train_video.py" in line]

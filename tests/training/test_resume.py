"""Exact resume: N steps straight == N/2 steps, SIGKILL, resume, N/2 more (every logged loss equal).

Runs train_video.py as real processes on the CPU demo model (fp32, ZeRO-1, LoRA)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cogvideox_sat.training.metrics import read_metrics
from tests.train_runs import demo_overlay, losses, make_demo_assets, run_dir_of, train_command

pytestmark = pytest.mark.slow

N = 12
SAVE_AT = N // 2


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_assets(tmp_path_factory.mktemp("assets"))


def overlay(assets: Path, save: Path, **args) -> dict:
    return demo_overlay(assets, save, **{"train_iters": N, "save_interval": SAVE_AT, **args})


def launch(tmp: Path, model: str, extra: dict, *flags: str) -> subprocess.Popen:
    cmd, env = train_command(tmp, model, extra, *flags)
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def test_sigkill_and_resume_reproduces_every_loss(assets: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    out = finish(launch(tmp_path, "tiny_t2v_lora.yaml", overlay(assets, straight)))
    assert "run directory:" in out
    expected = losses(run_dir_of(straight))
    assert sorted(expected) == list(range(1, N + 1))
    rec = read_metrics(run_dir_of(straight))[0]
    assert {"iteration", "loss", "lr", "step_s"} <= set(rec)

    killed = tmp_path / "killed"
    proc = launch(tmp_path, "tiny_t2v_lora.yaml", overlay(assets, killed))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = [p for p in killed.iterdir() if p.is_dir()] if killed.exists() else []
        if runs and (runs[0] / "latest").is_file() and max(losses(runs[0]) or [0]) > SAVE_AT:
            break
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = run_dir_of(killed)
    assert (run / "latest").read_text().strip() == str(SAVE_AT)
    assert max(losses(run)) < N, "the killed run must not have finished"

    out = finish(launch(tmp_path, "tiny_t2v_lora.yaml", overlay(assets, killed), "--resume", str(run)))
    assert f"resumed from {run} at iteration {SAVE_AT}" in out
    resumed = losses(run)
    assert sorted(resumed) == list(range(1, N + 1))
    assert resumed == expected  # bit-exact: same data, noise, LR and optimizer state


def test_finetune_from_a_checkpoint_starts_at_iteration_zero(assets: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    finish(launch(tmp_path, "tiny_t2v.yaml", overlay(assets, base, train_iters=2, save_interval=2)))
    base_run = run_dir_of(base)
    assert (base_run / "latest").read_text().strip() == "2"

    tuned = tmp_path / "tuned"
    out = finish(launch(tmp_path, "tiny_t2v_lora.yaml", overlay(assets, tuned, mode="finetune", load=str(base_run), train_iters=2, save_interval=2)))
    assert "loaded" in out and "missing in checkpoint" not in out
    assert sorted(losses(run_dir_of(tuned))) == [1, 2]

"""`mode: finetune` + `load` of a training run: the weights come in, the iteration count starts at 0.

Runs train_video.py as real processes on the CPU demo model (fp32, ZeRO-1). Exact `--resume` after
SIGKILL, SIGTERM and a damaged checkpoint: tests/training/test_faults_runs.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cogvideox_sat.training.metrics import read_metrics
from tests.train_runs import demo_overlay, losses, make_demo_assets, run_dir_of, train_command

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_assets(tmp_path_factory.mktemp("assets"))


def overlay(assets: Path, save: Path, **args) -> dict:
    return demo_overlay(assets, save, **{"train_iters": 2, "save_interval": 2, **args})


def launch(tmp: Path, model: str, extra: dict, *flags: str) -> subprocess.Popen:
    cmd, env = train_command(tmp, model, extra, *flags)
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def test_finetune_from_a_checkpoint_starts_at_iteration_zero(assets: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    finish(launch(tmp_path, "tiny_t2v.yaml", overlay(assets, base)))
    base_run = run_dir_of(base)
    assert (base_run / "latest").read_text().strip() == "2"

    tuned = tmp_path / "tuned"
    out = finish(launch(tmp_path, "tiny_t2v_lora.yaml", overlay(assets, tuned, mode="finetune", load=str(base_run))))
    assert "loaded" in out and "missing in checkpoint" not in out
    assert sorted(losses(run_dir_of(tuned))) == [1, 2]


def test_resuming_with_more_train_iters_and_another_weight_decay_follows_the_config(assets: Path, tmp_path: Path) -> None:
    # the common "train longer" resume: the checkpoint's schedule ended at iteration 2 (LR 0 there);
    # the config's 4-iteration schedule and its new weight decay must act for iterations 3-4, and say so
    save = tmp_path / "runs"
    finish(launch(tmp_path, "tiny_t2v.yaml", overlay(assets, save, warmup=0.0)))
    run = run_dir_of(save)
    longer = {**overlay(assets, save, warmup=0.0, train_iters=4, save_interval=4), "deepspeed": {"optimizer": {"params": {"weight_decay": 0.05}}}}
    out = finish(launch(tmp_path, "tiny_t2v.yaml", longer, "--resume", str(run)))
    warning = "warning: the optimizer and LR schedule follow the config, not the checkpoint: "
    assert warning + "total_iters 2 -> 4" in out
    assert warning + "param group 0: weight_decay 0.0001 -> 0.05" in out
    assert "param group 1: weight_decay" not in out  # biases and norms keep no decay
    lrs = {r["iteration"]: r["lr"] for r in read_metrics(run) if "lr" in r}
    finish(launch(tmp_path, "tiny_t2v.yaml", overlay(assets, tmp_path / "straight", warmup=0.0, train_iters=4, save_interval=4)))
    straight = {r["iteration"]: r["lr"] for r in read_metrics(run_dir_of(tmp_path / "straight")) if "lr" in r}
    assert sorted(lrs) == [1, 2, 3, 4] and lrs[3] > 0
    assert [lrs[3], lrs[4]] == pytest.approx([straight[3], straight[4]])  # as a 4-iteration run from the start

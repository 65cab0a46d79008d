"""fp16 training with dynamic loss scaling on a GPU (DeepSpeed cannot run fp16 on a CPU).

The tiny demo LoRA model through train_video.py, ZeRO-2, fp16, FusedEmaAdam. The initial loss
scale 2^40 overflows for sure, so the first steps are skipped: the test checks that DeepSpeed
lowers the scale, that metrics.jsonl carries the loss scale and the overflow count, that the
EMA advanced only on applied steps, and that the losses, weights and EMA stay finite.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from cogvideox_sat.training.metrics import read_metrics
from tests.train_runs import demo_overlay, make_demo_assets, run_dir_of, train_command

pytestmark = pytest.mark.gpu

STEPS = 8


def test_fp16_step_with_loss_scaling_skips_overflow_and_keeps_everything_finite(tmp_path: Path) -> None:
    assets = make_demo_assets(tmp_path / "assets")
    overlay = demo_overlay(assets, tmp_path / "runs", train_iters=STEPS, save_interval=STEPS)
    overlay["deepspeed"] = {
        "zero_optimization": {"stage": 2},
        "bf16": {"enabled": False},
        "fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 40, "loss_scale_window": 2, "hysteresis": 1, "min_loss_scale": 1},
        "optimizer": {"type": "sat.ops.FusedEmaAdam", "params": {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-4, "ema_decay": 0.99}},
    }
    cmd, env = train_command(tmp_path, "tiny_t2v_lora.yaml", overlay)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run = run_dir_of(tmp_path / "runs")
    records = [r for r in read_metrics(run) if "loss" in r]
    assert len(records) == STEPS
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    scales = [r["loss_scale"] for r in records]
    assert scales[0] < 2.0**40 and scales[-1] <= scales[0], scales  # overflow lowered the scale
    skipped = records[-1]["overflow_skipped"]
    assert skipped >= 1
    assert records[-1]["ema_updates"] == STEPS - skipped  # skipped steps leave the EMA alone

    for tag in (str(STEPS), f"{STEPS}-ema"):
        module = torch.load(run / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
        bad = [k for k, v in module.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        assert module and not bad, f"{tag}: non-finite {bad[:3]}"

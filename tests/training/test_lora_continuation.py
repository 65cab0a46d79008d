"""`--mode finetune --load BASE --lora-load LORA` continues training the adapters of an existing
LoRA run (ours, or one that tools/convert_weight_hf2sat.py imported from diffusers: the same
format) instead of starting new ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cogvideox_sat.io import read_module_state, resolve_checkpoint_file
from tests.train_runs import demo_overlay, losses, make_demo_assets, random_base_run, run_dir_of, train_command

pytestmark = pytest.mark.slow  # three short train_video.py runs


def train(tmp: Path, assets: Path, model: str, save: Path, *flags: str, lr: float | None = None, **args) -> Path:
    overlay = demo_overlay(assets, save, save_interval=args["train_iters"], **args)
    if lr is not None:  # the optimizer's lr is deepspeed.optimizer.params.lr (args.lr does not override it)
        overlay["deepspeed"] = {"optimizer": {"params": {"lr": lr, "weight_decay": 0.0}}}
    cmd, env = train_command(tmp, model, overlay, *flags)
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir_of(save)


def adapters(run: Path) -> dict:
    return {k: v for k, v in read_module_state(resolve_checkpoint_file(run)).items() if ".matrix_" in k}


def test_lora_load_continues_the_adapters_of_a_lora_run(tmp_path: Path) -> None:
    assets = make_demo_assets(tmp_path / "assets")
    base = random_base_run(tmp_path / "base")
    first = train(tmp_path, assets, "tiny_t2v_lora.yaml", tmp_path / "lora1", "--mode", "finetune", "--load", str(base), train_iters=6)
    trained = adapters(first)
    assert any(v.abs().sum() > 0 for k, v in trained.items() if "matrix_B" in k)  # B left zero init: it trained

    # continue from those adapters with a zero learning rate: they come back unchanged, and the
    # first loss is that of the trained adapters, not of fresh ones
    cont = train(tmp_path, assets, "tiny_t2v_lora.yaml", tmp_path / "lora2", "--mode", "finetune", "--load", str(base),
                 "--lora-load", str(first), lr=0.0, train_iters=1)
    again = adapters(cont)
    assert set(again) == set(trained)
    for key, value in trained.items():
        assert again[key].float().equal(value.float()), key
    fresh = train(tmp_path, assets, "tiny_t2v_lora.yaml", tmp_path / "lora3", "--mode", "finetune", "--load", str(base),
                  lr=0.0, train_iters=1)
    assert losses(cont)[1] != losses(fresh)[1]

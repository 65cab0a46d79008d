"""A tiny model trains on still images (one-frame clips) and videos mixed by train_data_weights:
the engine's step on each kind of batch, then train_video.py runs on mixed data (batches of two,
so a batch mixing a still and a clip could not even be collated) and resumes exactly."""

from __future__ import annotations

import argparse
import math
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cogvideox_sat.engine import SATVideoDiffusionEngine
from tests.conftest import REPO
from tests.train_runs import demo_overlay, losses, make_demo_assets, make_still_folder, run_dir_of, train_command


def _engine(name: str, t5: Path) -> SATVideoDiffusionEngine:
    cfg = OmegaConf.load(REPO / "configs" / "demo" / f"{name}.yaml").model
    cfg.conditioner_config.params.emb_models[0].params.model_dir = str(t5)
    torch.manual_seed(0)
    return SATVideoDiffusionEngine(argparse.Namespace(model_config=cfg, fp16=False, bf16=False, device="cpu"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_demo_assets(tmp_path_factory.mktemp("assets"))
    make_still_folder(root / "stills", n=4, height=80, width=96)  # another aspect: center-cropped to 64x96
    return root


@pytest.mark.parametrize("name", ["tiny_t2v", "tiny_i2v"])
def test_engine_step_on_a_still_batch_and_a_video_batch(assets: Path, name: str) -> None:
    engine = _engine(name, assets / "t5")
    for frames in (1, 9):  # a still -> 1 latent frame; a clip -> 3
        batch = {"mp4": torch.rand(2, frames, 3, 64, 96) * 2 - 1, "txt": ["a still", "a clip"], "num_frames": torch.tensor([frames] * 2), "fps": torch.tensor([8, 8])}
        engine.zero_grad()
        loss, _ = engine.shared_step(batch)
        loss.backward()
        grads = [p.grad for p in engine.model.parameters() if p.grad is not None]
        assert math.isfinite(loss.item()) and grads and all(torch.isfinite(g).all() for g in grads)


def _mixed(assets: Path, save: Path, **args) -> dict:
    overlay = demo_overlay(assets, save, **args)
    overlay["args"].update(train_data=[str(assets / "data"), str(assets / "stills")], train_data_weights=[1, 2])
    overlay["data"] = {"params": {"still_images": True}}
    overlay["deepspeed"] = {"train_micro_batch_size_per_gpu": 2}
    return overlay


def _run(tmp: Path, extra: dict, *flags: str) -> str:
    cmd, env = train_command(tmp, "tiny_t2v_lora.yaml", extra, *flags)
    proc = subprocess.run(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_mixed_run_trains_and_resumes_exactly(assets: Path, tmp_path: Path) -> None:
    n = 6  # an epoch: 6 clips + 2 x 4 stills = 14 indices -> 3 clip batches + 4 still batches
    _run(tmp_path, _mixed(assets, tmp_path / "straight", train_iters=n, save_interval=n))
    expected = losses(run_dir_of(tmp_path / "straight"))
    assert sorted(expected) == list(range(1, n + 1)) and all(math.isfinite(v) for v in expected.values())

    _run(tmp_path, _mixed(assets, tmp_path / "halves", train_iters=n, save_interval=n, exit_interval=n // 2))
    run = run_dir_of(tmp_path / "halves")
    assert (run / "latest").read_text().strip() == str(n // 2)
    out = _run(tmp_path, _mixed(assets, tmp_path / "halves", train_iters=n, save_interval=n), "--resume", str(run))
    assert f"at iteration {n // 2}" in out
    assert losses(run) == expected  # same batches (stills and clips), noise and optimizer state

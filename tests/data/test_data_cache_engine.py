"""Cached items through the engine: `latent_input: true` on cached latents gives the same
training step as encoding the pixels (tiny demo engines, T2V and I2V, deterministic VAE)."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from cogvideox_sat.data import CacheEncoders, SFTDataset, build_latent_cache
from cogvideox_sat.demo.clips import make_sft_folder

REPO = Path(__file__).resolve().parents[2]
PARAMS = {"video_size": [64, 96], "fps": 8, "max_num_frames": 9, "skip_frms_num": 0.0}


def tiny_engine(config: str, t5_dir: Path):
    from cogvideox_sat.engine import SATVideoDiffusionEngine

    cfg = OmegaConf.load(REPO / "configs" / "demo" / config).model
    cfg.conditioner_config.params.emb_models[0].params.model_dir = str(t5_dir)
    cfg.first_stage_config.params.regularizer_config.params = {"sample": False}  # the mean: comparable bit for bit
    torch.manual_seed(0)
    return SATVideoDiffusionEngine(argparse.Namespace(model_config=cfg, fp16=False, bf16=False, device="cpu"))


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    return make_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=32)


@pytest.fixture(scope="module")
def engine(t5_dir):
    return tiny_engine("tiny_t2v.yaml", t5_dir)


@pytest.fixture(scope="module")
def i2v_engine(t5_dir):
    return tiny_engine("tiny_i2v.yaml", t5_dir)


def build_with(engine, tmp_path, first_frame: bool = True) -> tuple[SFTDataset, SFTDataset]:
    """(pixel dataset, cached dataset) of 2 clips, the cache built with the engine's VAE and T5."""
    make_sft_folder(tmp_path / "data", n_clips=2, num_frames=9, height=64, width=96, fps=8)
    t5 = engine.conditioner.embedders[0]
    encoders = CacheEncoders(
        encode_video=lambda x: engine.first_stage_model.encode(x.permute(0, 2, 1, 3, 4)),  # unscaled (B, C', T', H', W')
        encode_text=lambda texts: t5(texts),
        fingerprint="tiny-engine",
    )
    pixels = SFTDataset(str(tmp_path / "data"), **PARAMS)
    with torch.no_grad():
        build_latent_cache(pixels, str(tmp_path / "cache"), encoders, first_frame=first_frame, progress=False)
    return pixels, SFTDataset(str(tmp_path / "data"), latent_cache=str(tmp_path / "cache"), **PARAMS)


def step_losses(engine, px_batch, lat_batch) -> list[torch.Tensor]:
    """The training step's loss on pixels, then on cached latents, from the same seeds."""
    losses = []
    for latent_input, batch in ((False, px_batch), (True, lat_batch)):
        engine.latent_input = latent_input
        torch.manual_seed(1)
        random.seed(1)  # I2V's noised_image_dropout draws from Python's random
        try:
            with torch.no_grad():
                loss, _ = engine.shared_step(dict(batch))
        finally:
            engine.latent_input = False
        losses.append(loss)
    return losses


def test_cached_latents_train_like_pixels(engine, tmp_path):
    pixels, cached = build_with(engine, tmp_path)
    px_batch = default_collate([pixels[0], pixels[1]])
    lat_batch = default_collate([cached[0], cached[1]])
    assert lat_batch["mp4"].shape == (2, 4, 3, 8, 12)  # (B, C', T', H', W') as the official latent_input expects
    assert lat_batch["txt"] == px_batch["txt"]

    losses = step_losses(engine, px_batch, lat_batch)
    assert torch.isfinite(losses[0])
    assert torch.allclose(losses[0], losses[1], rtol=1e-6, atol=0), losses


def test_i2v_cached_latents_train_like_pixels(i2v_engine, tmp_path):
    pixels, cached = build_with(i2v_engine, tmp_path)
    px_batch = default_collate([pixels[0], pixels[1]])
    lat_batch = default_collate([cached[0], cached[1]])
    assert lat_batch["first_frame"].shape == (2, 3, 1, 64, 96)  # (B, C, 1, H, W), the pixel path's x[:, :, 0:1]
    assert torch.equal(lat_batch["first_frame"], px_batch["mp4"].permute(0, 2, 1, 3, 4)[:, :, 0:1])

    losses = step_losses(i2v_engine, px_batch, lat_batch)
    assert torch.isfinite(losses[0])
    assert torch.allclose(losses[0], losses[1], rtol=1e-6, atol=0), losses
    # the condition matters: another first frame gives another loss
    other = dict(lat_batch, first_frame=lat_batch["first_frame"].flip(0))
    assert not torch.allclose(step_losses(i2v_engine, px_batch, other)[1], losses[1], rtol=1e-6, atol=0)


def test_i2v_on_a_cache_without_first_frames_says_rebuild(i2v_engine, tmp_path):
    _, cached = build_with(i2v_engine, tmp_path, first_frame=False)
    lat_batch = default_collate([cached[0], cached[1]])
    assert "first_frame" not in lat_batch
    i2v_engine.latent_input = True
    try:
        with pytest.raises(ValueError, match="rebuild the cache with tools/build_latent_cache.py for this I2V config"):
            i2v_engine.shared_step(dict(lat_batch))
    finally:
        i2v_engine.latent_input = False


def test_training_start_refuses_i2v_on_a_cache_without_first_frames(i2v_engine, tmp_path, monkeypatch):
    """train() checks the cache before the first step (check_latent_cache), not at step 1."""
    import cogvideox_sat.data.encoders as encoders
    from cogvideox_sat.training.main import check_latent_cache

    monkeypatch.setattr(encoders, "check_cache_matches_model", lambda *a, **k: None)  # fingerprints: tested elsewhere
    args = argparse.Namespace(model_config=OmegaConf.create({"first_stage_config": {"params": {}}}))
    _, without = build_with(i2v_engine, tmp_path / "old", first_frame=False)
    _, with_frames = build_with(i2v_engine, tmp_path / "new", first_frame=True)
    i2v_engine.latent_input = True
    try:
        with pytest.raises(ValueError, match=r"has no first frames.*rebuild the cache with tools/build_latent_cache.py"):
            check_latent_cache(without, args, i2v_engine)
        check_latent_cache(with_frames, args, i2v_engine)
    finally:
        i2v_engine.latent_input = False

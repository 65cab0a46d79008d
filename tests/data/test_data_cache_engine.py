"""Cached items through the engine: `latent_input: true` on cached latents gives the same
training step as encoding the pixels (tiny demo engine, deterministic VAE)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from cogvideox_sat.data import CacheEncoders, SFTDataset, build_latent_cache
from cogvideox_sat.demo.clips import make_sft_folder

REPO = Path(__file__).resolve().parents[2]
PARAMS = {"video_size": [64, 96], "fps": 8, "max_num_frames": 9, "skip_frms_num": 0.0}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5
    from cogvideox_sat.engine import SATVideoDiffusionEngine

    cfg = OmegaConf.load(REPO / "configs" / "demo" / "tiny_t2v.yaml").model
    cfg.conditioner_config.params.emb_models[0].params.model_dir = str(make_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=32))
    cfg.first_stage_config.params.regularizer_config.params = {"sample": False}  # the mean: comparable bit for bit
    torch.manual_seed(0)
    return SATVideoDiffusionEngine(argparse.Namespace(model_config=cfg, fp16=False, bf16=False, device="cpu"))


def test_cached_latents_train_like_pixels(engine, tmp_path):
    make_sft_folder(tmp_path / "data", n_clips=2, num_frames=9, height=64, width=96, fps=8)
    t5 = engine.conditioner.embedders[0]
    encoders = CacheEncoders(
        encode_video=lambda x: engine.first_stage_model.encode(x.permute(0, 2, 1, 3, 4)),  # unscaled (B, C', T', H', W')
        encode_text=lambda texts: t5(texts),
        fingerprint="tiny-engine",
    )
    pixels = SFTDataset(str(tmp_path / "data"), **PARAMS)
    with torch.no_grad():
        build_latent_cache(pixels, str(tmp_path / "cache"), encoders, progress=False)
    cached = SFTDataset(str(tmp_path / "data"), latent_cache=str(tmp_path / "cache"), **PARAMS)
    px_batch = default_collate([pixels[0], pixels[1]])
    lat_batch = default_collate([cached[0], cached[1]])
    assert lat_batch["mp4"].shape == (2, 4, 3, 8, 12)  # (B, C', T', H', W') as the official latent_input expects
    assert lat_batch["txt"] == px_batch["txt"]

    losses = []
    for latent_input, batch in ((False, px_batch), (True, lat_batch)):
        engine.latent_input = latent_input
        torch.manual_seed(1)
        with torch.no_grad():
            loss, _ = engine.shared_step(dict(batch))
        losses.append(loss)
    engine.latent_input = False
    assert torch.isfinite(losses[0])
    assert torch.allclose(losses[0], losses[1], rtol=1e-6, atol=0), losses

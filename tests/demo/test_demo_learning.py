"""The whole loop learns, at tiny size on the CPU: the engine's loss (training target) overfits a
fixed batch, sampling a trained caption with the configured sampler (denoiser scaling, guider)
lands nearest its own clip, and a LoRA stage on top changes only adapter tensors yet moves a new
caption's sample onto a new clip.

The clips here are latents (cached-latent batches, `model.latent_input`), so the VAE is not in
the way; the demo command test (tests/test_demo_command.py) covers pixels, VAE and files.
A wrong training target or denoiser scaling makes the sampled latents miss their clips; a LoRA
that is not wired into the forward cannot learn the new clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cogvideox_sat.demo.tiny_t5 import make_tiny_t5
from cogvideox_sat.engine import SATVideoDiffusionEngine
from cogvideox_sat.sampling.generate import draw_latents, prompt_inputs
from cogvideox_sat.sampling.weights import load_sampling_weights, merge_lora_weights
from cogvideox_sat.training.weights import load_transformer
from tests.train_runs import save_dit_run

pytestmark = pytest.mark.slow  # ~25 s: 2,100 tiny training steps and 5 sampled clips

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo"
LATENT = (4, 3, 8, 12)  # cached layout per clip: (c, t, h, w)
CAPTIONS = ["A red square moving right across a blue gradient background.",
            "A yellow circle moving down across a green gradient background.",
            "A white bar moving left across a red gradient background."]
NEW_CAPTION = "A purple bar moving right across a white gradient background."


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=32)


def engine_for(name: str, t5_dir: Path) -> SATVideoDiffusionEngine:
    cfg = OmegaConf.load(DEMO / f"{name}.yaml").model
    cfg.conditioner_config.params.emb_models[0].params.model_dir = str(t5_dir)
    cfg.sampler_config.params.verbose = False
    cfg.latent_input = True
    # No guidance: classifier-free guidance extrapolates away from the unconditional prediction,
    # which would hide a mis-scaled denoiser behind saturated samples.
    cfg.sampler_config.params.guider_config.params.scale = 1
    torch.manual_seed(0)
    return SATVideoDiffusionEngine(argparse.Namespace(model_config=cfg, fp16=False, bf16=False, device="cpu"))


def clip_latents(n: int, seed: int) -> torch.Tensor:
    """n distinct latent 'clips' (c, t, h, w): a per-clip colour offset, a moving blob, a ramp."""
    g = torch.Generator().manual_seed(seed)
    c, t, h, w = LATENT
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    clips = []
    for _ in range(n):
        offset = torch.randn(c, 1, 1, 1, generator=g) * 1.2
        direction = torch.randn(2, generator=g)
        frames = []
        for k in range(t):
            cx, cy = direction * (k - 1) * 0.5
            blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.15)
            frames.append(blob[None] * torch.randn(c, 1, 1, generator=g).sign() + 0.3 * xx[None])
        clips.append(offset + torch.stack(frames, 1))
    return torch.stack(clips)  # (n, c, t, h, w), unscaled like a latent cache's entries


def batch_of(latents: torch.Tensor, captions: list[str]) -> dict:
    return {"mp4": latents, "txt": list(captions), "num_frames": torch.full((len(captions),), 9), "fps": torch.full((len(captions),), 8)}


def train(engine: SATVideoDiffusionEngine, batch: dict, steps: int, lr: float) -> None:
    params = [p for p in engine.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    engine.train()
    for _ in range(steps):
        loss, _ = engine.shared_step(dict(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    engine.eval()


def loss_at_fixed_noise(engine: SATVideoDiffusionEngine, batch: dict) -> float:
    torch.manual_seed(1234)  # the same timesteps, noise and caption dropout every call
    with torch.no_grad():
        return float(engine.shared_step(dict(batch))[0])


def nearest(engine: SATVideoDiffusionEngine, caption: str, clips: torch.Tensor, seed: int = 42) -> tuple[int, list[float]]:
    """Index of the clip nearest the caption's sample (MSE in scaled latent space) and all distances."""
    c, t, h, w = LATENT
    cond, uncond = prompt_inputs(engine, caption, None, t, seed)
    z = draw_latents(engine, cond, uncond, seed, (t, c, h, w))[0]  # scaled (t, c, h, w)
    targets = clips.permute(0, 2, 1, 3, 4) * engine.scale_factor
    distances = [float((z - target).pow(2).mean()) for target in targets]
    return min(range(len(distances)), key=distances.__getitem__), distances


def test_engine_overfits_a_fixed_batch_tenfold(t5_dir) -> None:
    engine = engine_for("tiny_t2v", t5_dir)
    engine.disable_untrainable_params()
    batch = batch_of(clip_latents(2, seed=0), CAPTIONS[:2])
    before = loss_at_fixed_noise(engine, batch)
    train(engine, batch, steps=300, lr=2e-3)
    after = loss_at_fixed_noise(engine, batch)
    assert after * 10 <= before, (before, after)


@pytest.fixture(scope="module")
def trained_base(t5_dir) -> tuple[SATVideoDiffusionEngine, torch.Tensor]:
    engine = engine_for("tiny_t2v", t5_dir)
    engine.disable_untrainable_params()
    clips = clip_latents(3, seed=1)
    train(engine, batch_of(clips, CAPTIONS), steps=1500, lr=2e-3)
    return engine, clips


def test_sampling_a_trained_caption_lands_nearest_its_own_clip(trained_base) -> None:
    engine, clips = trained_base
    for i, caption in enumerate(CAPTIONS):
        index, distances = nearest(engine, caption, clips)
        assert index == i, (caption, distances)
        others = [d for j, d in enumerate(distances) if j != i]
        # on its own clip, not near it: a sampler whose denoiser scaling differs from training's
        # (e.g. alpha ** 0.5 for alpha) lands 2-3x farther and fails this
        assert distances[i] < 0.12 * min(others), (caption, distances)


def test_lora_stage_trains_only_adapters_and_learns_a_new_clip(trained_base, t5_dir, tmp_path) -> None:
    base, clips = trained_base
    # the base run's weights, loaded into the LoRA model by the training loader
    base_run = save_dit_run(tmp_path / "base", base.model.diffusion_model.state_dict())
    engine = engine_for("tiny_t2v_lora", t5_dir)
    report = load_transformer(engine, base_run)
    assert report.ok and all("matrix_" in k for k in report.kept), report.summary()
    engine.disable_untrainable_params()
    trainable = {n for n, p in engine.named_parameters() if p.requires_grad}
    assert trainable and all("matrix_A" in n or "matrix_B" in n for n in trainable), sorted(trainable)
    before = {k: v.clone() for k, v in engine.state_dict().items()}
    new_clip = clip_latents(1, seed=7)
    all_clips = torch.cat([clips, new_clip])
    # before the LoRA stage (B = 0: the base alone) the new caption does not land on the new clip
    assert nearest(engine, NEW_CAPTION, all_clips)[0] != 3

    train(engine, batch_of(new_clip, [NEW_CAPTION]), steps=300, lr=5e-3)

    after = engine.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all("matrix_A" in k or "matrix_B" in k for k in changed), sorted(changed)
    assert any("matrix_B" in k for k in changed)  # B starts at zero: an adapter that acts must move it
    index, distances = nearest(engine, NEW_CAPTION, all_clips)
    assert index == 3, distances

    # as sample_video.py --load BASE --lora-load LORA sees it (adapters saved alone, as a LoRA run
    # saves them), then with --lora-merge: the same sample
    dit = engine.model.diffusion_model.state_dict()
    lora_run = save_dit_run(tmp_path / "lora", {k: v for k, v in dit.items() if "matrix_" in k})
    fresh = engine_for("tiny_t2v_lora", t5_dir)
    load_sampling_weights(fresh, base_run, lora_run)
    fresh.eval()
    loaded = nearest(fresh, NEW_CAPTION, all_clips)
    assert loaded == (index, distances)
    merge_lora_weights(fresh)
    merged_index, merged = nearest(fresh, NEW_CAPTION, all_clips)
    assert merged_index == 3 and merged == pytest.approx(distances, rel=1e-3, abs=1e-5)

"""What the config decides: sampler, guider and step count; decoding modes; a CogVideoX-1.5-style
model (temporal patch 2, ofs, padded latents); the I2V latent scale per model generation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import pytest
import torch
import yaml
from conftest import DEMO, DIT, FRAMES, HEIGHT, WIDTH, overlay_dict, save_sat

from cogvideox_sat.engine import SATVideoDiffusionEngine
from cogvideox_sat.sampling import sample
from cogvideox_sat.sampling.conditioning import image_concat

DIFF = "cogvideox_sat.diffusion"


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def model_with_sampler(tmp_path: Path, assets, sampler: str, guider: str, steps: int = 2) -> Path:
    """The tiny T2V model (with the test T5) whose sampler_config is replaced as a whole."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(DEMO / "tiny_t2v.yaml"), OmegaConf.create(overlay_dict(assets["t5"]))))
    guider_params = {"scale": 6} if guider == "VanillaCFG" else {"scale": 6, "exp": 5, "num_steps": steps}
    cfg["model"]["sampler_config"] = {
        "target": f"{DIFF}.sampling.{sampler}",
        "params": {"num_steps": steps, "verbose": False,
                   "discretization_config": {"target": f"{DIFF}.discretizer.ZeroSNRDDPMDiscretization", "params": {"shift_scale": 3.0}},
                   "guider_config": {"target": f"{DIFF}.guiders.{guider}", "params": guider_params}},
    }
    return write(tmp_path / f"{sampler}-{guider}-{steps}.yaml", cfg)


def z_of(written: list[Path]) -> torch.Tensor:
    (path,) = [p for p in written if p.name == "latent.pt"]
    return torch.load(path, weights_only=True)


def test_sampler_guider_and_steps_come_from_the_config(make_args, assets, tmp_path: Path):
    # 4 steps: DPM-Solver++(2M)'s second-order term needs a previous alpha > 0 (the zero-SNR
    # schedule starts at alpha 0), so with fewer steps the ODE variant equals DDIM exactly
    def run(sampler: str, guider: str, steps: int = 4) -> torch.Tensor:
        model = model_with_sampler(tmp_path, assets, sampler, guider, steps)
        return z_of(sample(make_args(model, ["a cat"], "--only-save-latents", overlay=False)))

    results = {(s, g): run(s, g) for s in ("VPSDEDPMPP2MSampler", "VPODEDPMPP2MSampler", "VideoDDIMSampler") for g in ("DynamicCFG", "VanillaCFG")}
    five = run("VideoDDIMSampler", "VanillaCFG", 5)
    values = list(results.values()) + [five]
    assert all(torch.isfinite(v).all() for v in values)
    for i in range(len(values)):  # every choice changes the samples
        for j in range(i):
            assert not torch.equal(values[i], values[j]), (i, j)


def test_decode_modes(make_args):
    official = sample(make_args("tiny_t2v", ["a cat"], official_decode=True))
    chunked = sample(make_args("tiny_t2v", ["a cat"], decode_chunk_frames=1))
    # official: latent 0 dropped, 4 frames per remaining latent; chunks [1, 2] still give the clip's 9
    assert iio.imread(next(p for p in official if p.suffix == ".mp4")).shape == (8, HEIGHT, WIDTH, 3)
    assert iio.imread(next(p for p in chunked if p.suffix == ".mp4")).shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_temporal_patch_two_with_ofs_samples_padded_latents(make_args, assets, tmp_path: Path):
    """A 1.5-I2V-style tiny model: temporal patch 2, ofs embedding, 4 latents (1 padding + 3)."""
    from omegaconf import OmegaConf

    network = {"model": {"network_config": {"params": {"patch_size": [2, 2, 2], "ofs_embed_dim": 32, "num_frames": 13}}}}
    overlay = write(tmp_path / "v15.yaml", network)
    base = OmegaConf.merge(OmegaConf.load(DEMO / "tiny_i2v.yaml"), OmegaConf.create(overlay_dict(assets["t5"])), OmegaConf.create(network))
    torch.manual_seed(0)
    v15 = SATVideoDiffusionEngine(SimpleNamespace(model_config=base.model, fp16=False, bf16=False, device="cpu"))
    assert v15.uses_ofs and v15.temporal_patch_size == 2
    ckpt = save_sat(tmp_path / "v15", {DIT + k: v for k, v in v15.model.diffusion_model.state_dict().items()})
    args = make_args("tiny_i2v", [f"a square@@{assets['red']}"], "--image2video", "--sampling-num-frames", "4", load=ckpt, configs=[overlay])
    (mp4,) = [p for p in sample(args) if p.suffix == ".mp4"]
    assert iio.imread(mp4).shape == (FRAMES, HEIGHT, WIDTH, 3)  # padding latent dropped: 1 + 4 * 2


@pytest.mark.parametrize("uses_ofs, expected", [(False, 0.7), (True, 1.0)])
def test_image_latent_scale_per_model_generation(uses_ofs, expected):
    """1.0 I2V: the scaled latent (as trained, as diffusers); 1.5 I2V: divided by scale_factor
    again, as the official 1.5 sample_video.py does."""
    vae = torch.nn.Linear(1, 1)
    fake = SimpleNamespace(
        first_stage_model=vae, uses_ofs=uses_ofs, scale_factor=0.7, noised_image_all_concat=False,
        encode_first_stage=lambda x: torch.ones(1, 4, 1, 2, 3) * 0.7,  # scale_factor * (VAE latent = 1)
    )
    fake.image_condition = lambda latent, z: SATVideoDiffusionEngine.image_condition(fake, latent, z)
    concat = image_concat(fake, torch.zeros(1, 3, 1, 16, 24), num_latent_frames=3)
    assert concat.shape == (1, 3, 4, 2, 3)
    torch.testing.assert_close(concat[:, 0], torch.full((1, 4, 2, 3), expected))
    assert not concat[:, 1:].any()

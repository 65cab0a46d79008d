"""Shared by the weight-tool tests: load a tool as a module, write tiny SAT checkpoints and configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from cogvideox_sat.io.sat_checkpoint import DIT_PREFIX
from cogvideox_sat.io.sat_writer import write_sat_checkpoint
from cogvideox_sat.registry import instantiate_from_config
from tests._scripts import load_script
from tests.models.dit_cases import network_config, randomize_
from tests.vae._vae_testkit import randomize_ as randomize_vae_
from tests.vae._vae_testkit import tiny_config as tiny_vae_config

REPO = Path(__file__).resolve().parents[2]
SGM = "sgm.modules.diffusionmodules"
DENOISER = {  # official target names, as released YAMLs write them
    "target": f"{SGM}.denoiser.DiscreteDenoiser",
    "params": {
        "num_idx": 1000,
        "quantize_c_noise": False,
        "weighting_config": {"target": f"{SGM}.denoiser_weighting.EpsWeighting"},
        "scaling_config": {"target": f"{SGM}.denoiser_scaling.VideoScaling"},
        "discretization_config": {"target": f"{SGM}.discretizer.ZeroSNRDDPMDiscretization", "params": {"shift_scale": 3.0}},
    },
}


def load_tool(name: str) -> Any:
    """tools/<name>.py as a module (its main(argv) runs in this process)."""
    return load_script(REPO / "tools" / f"{name}.py", name)


def tiny_dit(variant: str, seed: int = 3, lora: dict | None = None) -> torch.nn.Module:
    return randomize_(instantiate_from_config(network_config(variant, lora=lora)), seed=seed).eval()


def tiny_vae(seed: int = 5) -> torch.nn.Module:
    return randomize_vae_(instantiate_from_config(tiny_vae_config()), seed).eval()


def model_yaml(path: Path, variant: str, lora: dict | None = None, scale_factor: float = 0.7, **extra: Any) -> Path:
    """A SAT model config of a tiny variant (network, VAE, denoiser) as a --base file."""
    model = {
        "scale_factor": scale_factor,
        "denoiser_config": DENOISER,
        "network_config": network_config(variant, lora=lora),
        "first_stage_config": tiny_vae_config(),
        **extra,
    }
    path.write_text(yaml.safe_dump({"model": model}))
    return path


def save_engine_checkpoint(folder: Path, dit: torch.nn.Module | None = None, vae: torch.nn.Module | None = None, extra: dict | None = None) -> Path:
    """A SAT-layout checkpoint of engine keys: the DiT under model.diffusion_model., the VAE under
    first_stage_model. (as full fine-tunes carry it), plus `extra` tensors."""
    state: dict[str, torch.Tensor] = {}
    if dit is not None:
        state.update({DIT_PREFIX + k: v for k, v in dit.state_dict().items()})
    if vae is not None:
        state.update({"first_stage_model." + k: v for k, v in vae.state_dict().items()})
    state.update(extra or {})
    write_sat_checkpoint(state, folder, iteration=1)
    return folder

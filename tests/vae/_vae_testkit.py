"""Tiny VAE configs, seeded models and multi-process helpers shared by the VAE tests."""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path
from typing import Any

import torch

from cogvideox_sat.registry import instantiate_from_config

FIXTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "official" / "vae_9f"


def tiny_config(
    cp_size: int = 1, gather_norm_encoder: bool = True, gather_norm_decoder: bool = False, sample: bool = False
) -> dict[str, Any]:
    """The official first_stage_config layout with official target names, shrunk to CPU size."""
    common = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 32,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 2, 1, 1],
        "attn_resolutions": [],
        "num_res_blocks": 1,
        "dropout": 0.0,
    }
    return {
        "target": "vae_modules.autoencoder.VideoAutoencoderInferenceWrapper",
        "params": {
            "cp_size": cp_size,
            "ignore_keys": ["loss"],
            "loss_config": {"target": "torch.nn.Identity"},
            "regularizer_config": {
                "target": "vae_modules.regularizers.DiagonalGaussianRegularizer",
                "params": {"sample": sample},
            },
            "encoder_config": {
                "target": "vae_modules.cp_enc_dec.ContextParallelEncoder3D",
                "params": {**copy.deepcopy(common), "gather_norm": gather_norm_encoder},
            },
            "decoder_config": {
                "target": "vae_modules.cp_enc_dec.ContextParallelDecoder3D",
                "params": {**copy.deepcopy(common), "gather_norm": gather_norm_decoder},
            },
        },
    }


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial values for every parameter (norm weights near 1), reproducible across processes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.dim() == 1:  # norm scales
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    return module


def tiny_vae(seed: int = 0, **config: Any) -> torch.nn.Module:
    return randomize_(instantiate_from_config(tiny_config(**config)), seed).eval()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_gloo(rank: int, world: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the fixtures' error measure."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a - b).abs().max() / b.abs().max()).item()

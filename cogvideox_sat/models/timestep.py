"""Sinusoidal embedding of diffusion timesteps (and of the 1.5 I2V `ofs` value)."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(N,) timesteps -> (N, dim) `[cos(t f) | sin(t f)]`, f_i = max_period^(-i / (dim // 2)).

    Cosine first, as the official sgm helper; odd `dim` gets one zero column. Computed in
    float32 whatever the model dtype, then cast.
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = timesteps.reshape(-1, 1).float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding.to(dtype)


class SinusoidalTimestep(nn.Module):
    """`timestep_embedding` as a module (the official `num_classes: timestep` label embedding)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(timesteps, self.dim)


def embedding_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> SiLU -> Linear (keys `.0` and `.2`, as the official `time_embed`)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

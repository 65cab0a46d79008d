"""Normalisation layers of the transformer blocks (official `use_RMSNorm` switch)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """x / rms(x) * weight, statistics in float32 (SAT's `RMSNorm`; key `weight` only)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (self.weight * (x * torch.rsqrt(variance + self.eps))).to(x.dtype)


def block_norm(hidden_size: int, eps: float, elementwise_affine: bool, rms: bool) -> nn.Module:
    """A block LayerNorm (input, post-attention, final). The official code means eps 1e-6 but
    SAT overrides it with `layernorm_epsilon` (1e-5), which is what the weights were trained with."""
    if rms:
        return RMSNorm(hidden_size, eps=eps)
    return nn.LayerNorm(hidden_size, eps=eps, elementwise_affine=elementwise_affine)

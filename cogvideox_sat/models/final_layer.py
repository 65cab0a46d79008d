"""`FinalLayerMixin`: adaLN-modulated output projection of the image tokens, then unpatchify."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .adaln import modulate
from .geometry import TokenGrid, to_patch_size, unpatchify
from .mixin import Mixin


class FinalLayerMixin(Mixin):
    """`norm_final` (LayerNorm eps 1e-6), `adaLN_modulation` (SiLU, Linear -> shift, scale) and
    `linear` (hidden -> out_channels * pt * ph * pw). Runs after `transformer.final_layernorm`."""

    def __init__(
        self,
        hidden_size: int,
        time_embed_dim: int,
        patch_size: Any,
        out_channels: int,
        latent_width: int,
        latent_height: int,
        elementwise_affine: bool,
    ):
        super().__init__()
        self.patch_size = to_patch_size(patch_size)
        self.out_channels = out_channels
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=elementwise_affine, eps=1e-6)
        self.linear = nn.Linear(hidden_size, math.prod(self.patch_size) * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(time_embed_dim, 2 * hidden_size))

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
        """(B, L + N, hidden) tokens, (B, time_embed_dim) condition -> (B, T, out_channels, H, W)."""
        image = hidden[:, grid.text_length :]
        shift, scale = self.adaLN_modulation(emb).unsqueeze(1).chunk(2, dim=2)
        image = self.linear(modulate(self.norm_final(image), shift, scale))
        return unpatchify(image, grid, self.patch_size, self.out_channels)

    def reinit(self, parent_model: nn.Module | None = None) -> None:
        # Official init: xavier-uniform output projection, zero bias; the modulation keeps nn.Linear's.
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

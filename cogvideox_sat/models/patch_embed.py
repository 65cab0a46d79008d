"""`ImagePatchEmbeddingMixin`: latents and text embeddings -> the joint token sequence."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .geometry import TokenGrid, patchify, to_patch_size
from .mixin import Mixin


class ImagePatchEmbeddingMixin(Mixin):
    """`proj`: Linear over (c, pt, ph, pw)-ordered patches; `text_proj`: T5 width -> hidden.

    Released 1.0 checkpoints store `proj` as a Conv2d weight [hidden, C, p, p]; the loader in
    `cogvideox_sat.io` reshapes it to this Linear layout (same numbers, same order).
    Without `text_hidden_size`, `context` must already be `hidden_size` wide.
    """

    def __init__(self, in_channels: int, hidden_size: int, patch_size: Any, text_hidden_size: int | None = None):
        super().__init__()
        self.patch_size = to_patch_size(patch_size)
        self.proj = nn.Linear(in_channels * math.prod(self.patch_size), hidden_size)
        self.text_proj = nn.Linear(text_hidden_size, hidden_size) if text_hidden_size is not None else None

    def forward(self, latents: torch.Tensor, context: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
        """(B, T, C, H, W) latents, (B, L, text_hidden) context -> (B, L + T*H*W/patch, hidden)."""
        image = self.proj(patchify(latents, self.patch_size))
        text = self.text_proj(context) if self.text_proj is not None else context
        return torch.cat((text, image), dim=1)

    def reinit(self, parent_model: nn.Module | None = None) -> None:
        # Official init: xavier-uniform patch projection with zero bias; text_proj keeps nn.Linear's.
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

"""Tiny DiT test cases: the package's tiny configs (cogvideox_sat/models/tiny.py), random
weights and forward inputs of the matching shapes."""

from __future__ import annotations

import torch

from cogvideox_sat.models.tiny import HEADS, HIDDEN, LAYERS, TEXT_HIDDEN, TEXT_LENGTH, TIME_EMBED, VARIANTS
from cogvideox_sat.models.tiny import tiny_config as network_config

__all__ = ["HEADS", "HIDDEN", "LAYERS", "TEXT_HIDDEN", "TEXT_LENGTH", "TIME_EMBED", "VARIANTS", "inputs", "network_config", "randomize_"]


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial values (the official init zeroes some outputs), keeping
    buffers (position tables) as built. Norm weights stay near 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.dim() == 1:  # norm weights
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(noise / max(p.shape[-1], 1) ** 0.5)
    return model


def inputs(variant: str, batch: int = 2, frames: int | None = None, height: int = 8, width: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    """Keyword inputs of a forward call (x, timesteps, context, and concat_images / ofs)."""
    gen = torch.Generator().manual_seed(seed)
    frames = frames if frames is not None else (4 if variant.startswith("1.5") else 3)
    kwargs = {
        "x": torch.randn(batch, frames, 4, height, width, generator=gen),
        "timesteps": torch.tensor([999.0, 31.0, 500.0, 7.0][:batch]),
        "context": torch.randn(batch, TEXT_LENGTH, TEXT_HIDDEN, generator=gen),
    }
    if variant.endswith("i2v"):
        kwargs["concat_images"] = torch.randn(batch, frames, 4, height, width, generator=gen)
    if variant == "1.5_i2v":
        kwargs["ofs"] = torch.tensor([2.0])
    return kwargs

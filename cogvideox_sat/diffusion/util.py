"""Small tensor helpers shared by the diffusion modules."""

from __future__ import annotations

import torch


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """View `x` with trailing singleton dims so it broadcasts against a `target_dims`-D tensor."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"tensor has {x.ndim} dims, more than the target {target_dims}")
    return x[(...,) + (None,) * missing]

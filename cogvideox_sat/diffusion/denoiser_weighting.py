"""Per-noise-level loss weights exposed as `Denoiser.w(sigma)`.

VideoDiffusionLoss computes its own v-prediction weight 1 / (1 - alpha^2) and does not call
these; they exist because the official configs name `EpsWeighting` in the denoiser.
"""

from __future__ import annotations

import torch


class UnitWeighting:
    """Weight 1 at every noise level."""

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigma)


class EpsWeighting:
    """Weight sigma^-2 (epsilon-prediction's SNR weighting)."""

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma**-2.0

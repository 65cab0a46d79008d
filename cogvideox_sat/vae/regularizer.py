"""Diagonal Gaussian posterior of the VAE and the regularizer that samples it.

The encoder outputs moments = cat([mean, logvar], dim=1); logvar is clamped to [-30, 20]
(official). `DiagonalGaussianRegularizer(sample=...)` returns a sample or the mode (mean)
plus the KL loss, as the official sgm regularizer does.
"""

from __future__ import annotations

import torch
from torch import nn


class DiagonalGaussianDistribution:
    """N(mean, exp(logvar)) per latent element, from moments (B, 2C, ...)."""

    def __init__(self, moments: torch.Tensor, deterministic: bool = False) -> None:
        self.moments = moments
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        if deterministic:
            self.std = self.var = torch.zeros_like(self.mean)
        else:
            self.std = torch.exp(0.5 * self.logvar)
            self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * eps; eps drawn like `torch.randn_like(mean)` (same stream for a given seed)."""
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample: (B,)."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        terms = self.mean.square() + self.var - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(1)


class DiagonalGaussianRegularizer(nn.Module):
    """moments -> (latent, {"kl_loss": mean KL per sample}); latent is a sample or the mode."""

    def __init__(self, sample: bool = True) -> None:
        super().__init__()
        self.sample = sample

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        posterior = DiagonalGaussianDistribution(z)
        latent = posterior.sample() if self.sample else posterior.mode()
        kl = posterior.kl()
        return latent, {"kl_loss": kl.sum() / kl.shape[0]}

    def get_trainable_parameters(self):  # official API; no parameters
        yield from ()

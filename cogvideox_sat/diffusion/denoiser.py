"""DiscreteDenoiser: turns the network's raw output into a denoised estimate x_0."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cogvideox_sat.diffusion.util import append_dims
from cogvideox_sat.registry import instantiate_from_config


class DiscreteDenoiser(nn.Module):
    """Denoiser over a discrete 1000-step schedule.

    `forward(network, x_t, alpha, cond, **model_inputs)` snaps `alpha` (= sqrt(alpha_cumprod),
    "sigma" in sgm's naming) to the nearest entry of the `num_idx` table, applies the scaling
    (VideoScaling for CogVideoX) and returns c_out * network(c_in * x_t, c_noise, cond) +
    c_skip * x_t.

    The table is deliberately a plain float32 tensor, not a buffer: the engine is cast to
    bf16/fp16 as a whole, and a bf16 table would snap noise levels to different entries than
    the official code (whose table is a plain attribute too). It is moved to the input's device
    on use and never enters a checkpoint.
    """

    def __init__(
        self,
        weighting_config: Mapping[str, Any],
        scaling_config: Mapping[str, Any],
        num_idx: int,
        discretization_config: Mapping[str, Any],
        do_append_zero: bool = False,
        quantize_c_noise: bool = True,
        flip: bool = True,
    ) -> None:
        super().__init__()
        self.weighting = instantiate_from_config(weighting_config)
        self.scaling = instantiate_from_config(scaling_config)
        discretization = instantiate_from_config(discretization_config)
        # Flipped: entry i is DDPM timestep i.
        sigmas = discretization(num_idx, do_append_zero=do_append_zero, flip=flip)
        self.sigmas = sigmas.to(torch.float32)
        self.quantize_c_noise = quantize_c_noise

    def sigma_to_idx(self, sigma: torch.Tensor) -> torch.Tensor:
        """Index of the table entry nearest to each value of `sigma`."""
        dists = sigma - self.sigmas.to(sigma.device)[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def idx_to_sigma(self, idx: torch.Tensor) -> torch.Tensor:
        return self.sigmas.to(idx.device)[idx]

    def possibly_quantize_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.idx_to_sigma(self.sigma_to_idx(sigma))

    def possibly_quantize_c_noise(self, c_noise: torch.Tensor) -> torch.Tensor:
        # With VideoScaling c_noise is already the timestep index; quantize_c_noise=True (the
        # class default, off in every CogVideoX config) would treat it as a sigma, as sgm does.
        return self.sigma_to_idx(c_noise) if self.quantize_c_noise else c_noise

    def w(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.weighting(sigma)

    def forward(
        self,
        network: nn.Module,
        input: torch.Tensor,
        sigma: torch.Tensor,
        cond: dict[str, torch.Tensor],
        **additional_model_inputs: Any,
    ) -> torch.Tensor:
        # 1. Snap the noise level to the training table.
        sigma = self.possibly_quantize_sigma(sigma)  # [b]
        sigma_shape = sigma.shape
        sigma = append_dims(sigma, input.ndim)  # [b, 1, 1, 1, 1]
        # 2. Preconditioning coefficients.
        c_skip, c_out, c_in, c_noise = self.scaling(sigma, **additional_model_inputs)
        c_noise = self.possibly_quantize_c_noise(c_noise.reshape(sigma_shape))  # [b]
        # 3. Network call and skip connection.
        output = network(input * c_in, c_noise, cond, **additional_model_inputs)
        return output * c_out + input * c_skip

"""Preconditioning of the network input/output (v-prediction for CogVideoX)."""

from __future__ import annotations

import torch


class VideoScaling:
    """v-prediction in terms of alpha = sqrt(alpha_cumprod).

    denoised = c_skip * x_t + c_out * network(c_in * x_t, c_noise) with c_skip = alpha,
    c_out = -sqrt(1 - alpha^2), c_in = 1: for a network predicting
    v = alpha * noise - sqrt(1 - alpha^2) * x_0 this returns x_0. The network is conditioned on
    the DDPM timestep index (`idx`), not on alpha.
    """

    def __call__(
        self, alphas_cumprod_sqrt: torch.Tensor, **additional_model_inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if "idx" not in additional_model_inputs:
            raise ValueError("VideoScaling needs the DDPM timestep index as the `idx` model input")
        c_skip = alphas_cumprod_sqrt
        c_out = -((1 - alphas_cumprod_sqrt**2) ** 0.5)
        c_in = torch.ones_like(alphas_cumprod_sqrt)
        c_noise = additional_model_inputs["idx"].clone()
        return c_skip, c_out, c_in, c_noise

"""VideoDiffusionLoss: v-prediction MSE on randomly noised video latents."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cogvideox_sat.diffusion.util import append_dims
from cogvideox_sat.registry import instantiate_from_config


@dataclass
class NoiseDraw:
    """The random part of one training step: timestep indices, their sqrt(alpha_cumprod) and
    the noise. Drawn by `VideoDiffusionLoss.draw`, optionally made identical across a
    model-parallel group by the caller, then consumed by `VideoDiffusionLoss.compute`."""

    idx: torch.Tensor  # [b] int64 DDPM timesteps
    alphas_cumprod_sqrt: torch.Tensor  # [b] float32
    noise: torch.Tensor  # like the input latents

    def tensors(self) -> list[torch.Tensor]:
        return [self.idx, self.alphas_cumprod_sqrt, self.noise]


class VideoDiffusionLoss(nn.Module):
    """x_t = alpha x_0 + sqrt(1 - alpha^2) n for a drawn timestep; the denoiser's x_0 estimate
    is compared to x_0 with weight 1 / (1 - alpha^2), which makes it the v-prediction MSE.

    Latents are [b, t, c, h, w]. The official call `loss(network, denoiser, conditioner, x,
    batch)` works; the engine instead calls `draw` and `compute` separately so that the draw
    can be broadcast across a model-parallel group between the two (the math here never
    touches process groups). `batch["concat_images"]`, when present (image-to-video), becomes
    the `concat` condition.

    `block_scale` / `block_size` are accepted and unused, as in the official code.
    `type="lpips"` is not supported (image-space loss; never used for video).
    """

    def __init__(
        self,
        sigma_sampler_config: Mapping[str, Any],
        type: str = "l2",
        offset_noise_level: float = 0.0,
        batch2model_keys: str | Sequence[str] | None = None,
        block_scale: Any = None,
        block_size: Any = None,
        min_snr_value: float | None = None,
        fixed_frames: int = 0,
    ) -> None:
        super().__init__()
        if type not in ("l2", "l1"):
            raise ValueError(f"VideoDiffusionLoss: type must be 'l2' or 'l1', got {type!r}")
        self.sigma_sampler = instantiate_from_config(sigma_sampler_config)
        self.type = type
        self.offset_noise_level = float(offset_noise_level)
        if isinstance(batch2model_keys, str):
            batch2model_keys = [batch2model_keys]
        self.batch2model_keys = set(batch2model_keys or [])
        self.block_scale = block_scale
        self.block_size = block_size
        self.min_snr_value = min_snr_value
        self.fixed_frames = fixed_frames

    def draw(self, input: torch.Tensor) -> NoiseDraw:
        """Sample timestep indices and noise for the latents `input` [b, t, c, h, w].

        RNG order as the official loss: indices (CPU generator), noise (input's device),
        then the per-sample offset noise (CPU generator).
        """
        alphas_cumprod_sqrt, idx = self.sigma_sampler(input.shape[0], return_idx=True)
        noise = torch.randn_like(input)
        if self.offset_noise_level > 0.0:
            offset = torch.randn(input.shape[0]).to(input.device)
            noise = noise + append_dims(offset, input.ndim) * self.offset_noise_level
        return NoiseDraw(
            idx=idx.to(input.device),
            alphas_cumprod_sqrt=alphas_cumprod_sqrt.to(input.device),
            noise=noise,
        )

    def noised_input(self, input: torch.Tensor, draw: NoiseDraw) -> torch.Tensor:
        """x_t = alpha x_0 + sqrt(1 - alpha^2) n, in float32."""
        alpha = append_dims(draw.alphas_cumprod_sqrt, input.ndim)
        return input.float() * alpha + draw.noise * (1 - alpha**2) ** 0.5

    def weight(self, draw: NoiseDraw, ndim: int) -> torch.Tensor:
        """1 / (1 - alpha^2): the x_0-space weight equal to v-prediction MSE."""
        w = append_dims(1 / (1 - draw.alphas_cumprod_sqrt**2), ndim)
        if self.min_snr_value is not None:
            w = w.clamp(max=self.min_snr_value)
        return w

    def compute(
        self,
        network: nn.Module,
        denoiser: nn.Module,
        cond: dict[str, torch.Tensor],
        input: torch.Tensor,
        batch: Mapping[str, Any],
        draw: NoiseDraw,
        **extra_model_inputs: Any,
    ) -> torch.Tensor:
        """Per-sample loss [b] for the latents `input` [b, t, c, h, w] under `draw`."""
        # 1. Model inputs: configured batch keys, the timestep index, the I2V image latents.
        model_inputs = {key: batch[key] for key in self.batch2model_keys.intersection(batch)}
        model_inputs.update(extra_model_inputs)
        model_inputs["idx"] = draw.idx
        cond = dict(cond)
        if "concat_images" in batch:
            cond["concat"] = batch["concat_images"]
        # 2. Noise the clean latents and denoise them.
        noised = self.noised_input(input, draw)
        model_output = denoiser(network, noised, draw.alphas_cumprod_sqrt, cond, **model_inputs)
        # 3. Weighted distance to the clean latents, averaged per sample.
        return self.get_loss(model_output, input, self.weight(draw, input.ndim))

    def get_loss(self, model_output: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        diff = model_output - target
        err = diff**2 if self.type == "l2" else diff.abs()
        return torch.mean((w * err).reshape(target.shape[0], -1), 1)

    def forward(
        self,
        network: nn.Module,
        denoiser: nn.Module,
        conditioner: Callable[[Mapping[str, Any]], dict[str, torch.Tensor]],
        input: torch.Tensor,
        batch: Mapping[str, Any],
    ) -> torch.Tensor:
        """The official single call: condition, draw, compute (no model-parallel broadcast)."""
        cond = conditioner(batch)
        return self.compute(network, denoiser, cond, input, batch, self.draw(input))

"""Classifier-free guidance: combine unconditional and conditional denoiser outputs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from cogvideox_sat.diffusion.util import append_dims
from cogvideox_sat.registry import instantiate_from_config

# Condition keys that differ between the conditional and unconditional batch halves.
_BATCHED_COND_KEYS = ("vector", "crossattn", "concat")


class NoDynamicThresholding:
    """Plain CFG combination: uncond + scale * (cond - uncond)."""

    def __call__(self, uncond: torch.Tensor, cond: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
        if isinstance(scale, torch.Tensor):
            scale = append_dims(scale, cond.ndim)
        return uncond + scale * (cond - uncond)


class IdentityGuider:
    """No guidance: one denoiser pass on the conditional inputs (the samplers' default)."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        return x

    def prepare_inputs(
        self, x: torch.Tensor, s: torch.Tensor, c: dict[str, Any], uc: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        return x, s, dict(c)


class VanillaCFG:
    """CFG with a constant scale; the two halves run as one doubled batch (uncond first)."""

    def __init__(self, scale: float, dyn_thresh_config: Mapping[str, Any] | None = None) -> None:
        self.scale = scale
        self.dyn_thresh = (
            NoDynamicThresholding()
            if dyn_thresh_config is None
            else instantiate_from_config(dyn_thresh_config)
        )

    def scale_schedule(self, sigma: torch.Tensor, step_index: float | None = None) -> float:
        return self.scale

    def step_scale(self, sigma: torch.Tensor, step_index: float | None, scale: float | torch.Tensor | None) -> float | torch.Tensor:
        """The scale of this step: an explicit `scale` wins over the constant one."""
        return self.scale_schedule(sigma, step_index) if scale is None else scale

    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        step_index: torch.Tensor | float | None = None,
        scale: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        x_u, x_c = x.chunk(2)
        if isinstance(step_index, torch.Tensor):
            step_index = step_index.item()
        return self.dyn_thresh(x_u, x_c, self.step_scale(sigma, step_index, scale))

    def prepare_inputs(
        self, x: torch.Tensor, s: torch.Tensor, c: dict[str, Any], uc: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        c_out: dict[str, Any] = {}
        for key in c:
            if key in _BATCHED_COND_KEYS:
                c_out[key] = torch.cat((uc[key], c[key]), 0)
            else:
                if not _same(c[key], uc[key]):
                    raise ValueError(f"condition '{key}' differs between cond and uncond")
                c_out[key] = c[key]
        return torch.cat([x] * 2), torch.cat([s] * 2), c_out


class DynamicCFG(VanillaCFG):
    """CFG whose scale follows 1 + scale * (1 - cos(pi * (step_index / num_steps)^exp)) / 2.

    The official sampler passes step_index = num_steps - timestep with the DDPM timestep
    (999, 979, ...), i.e. a large negative number, so the schedule is effectively a
    deterministic pseudo-random scale in [1, 1 + scale] per step. That is what the released
    models were tuned and evaluated with; our samplers pass the same step_index.
    An explicit `scale` argument is ignored, as in the official code.
    """

    def __init__(
        self,
        scale: float,
        exp: float,
        num_steps: int,
        dyn_thresh_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scale, dyn_thresh_config)
        self.exp = exp
        self.num_steps = num_steps

    def scale_schedule(self, sigma: torch.Tensor, step_index: float | None = None) -> float:
        if step_index is None:
            raise ValueError("DynamicCFG needs the sampler's step_index")
        return 1 + self.scale * (1 - math.cos(math.pi * (step_index / self.num_steps) ** self.exp)) / 2

    def step_scale(self, sigma: torch.Tensor, step_index: float | None, scale: float | torch.Tensor | None) -> float:
        # an explicit scale is ignored, as in the official code
        return self.scale_schedule(sigma, step_index)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    return a == b

"""The network wrapper between the denoiser's call convention and the DiT's.

The engine stores the DiT as `model.diffusion_model`, which is where the released SAT
checkpoints' keys (`model.diffusion_model.*`) expect it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# The official default `network_wrapper`; the engine maps it to OpenAIWrapper below.
OFFICIAL_DEFAULT_WRAPPER = "sgm.modules.diffusionmodules.wrappers.OpenAIWrapper"


class OpenAIWrapper(nn.Module):
    """`forward(x, t, c, **kw)` -> `diffusion_model(cat(x, c["concat"]), timesteps=t,
    context=c["crossattn"], y=c.get("vector"), **kw)`.

    Conditions are cast to the model dtype; image-to-video latents in `c["concat"]` are
    concatenated on the channel axis (dim 2 of [b, t, c, h, w] latents).
    """

    def __init__(
        self, diffusion_model: nn.Module, compile_model: bool = False, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.diffusion_model = torch.compile(diffusion_model) if compile_model else diffusion_model
        self.dtype = dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        c = {key: value.to(self.dtype) for key, value in c.items()}
        if x.dim() not in (4, 5):
            raise ValueError(f"OpenAIWrapper: input must be 4D or 5D, got {tuple(x.shape)}")
        if "concat" in c:
            x = torch.cat((x, c["concat"].type_as(x)), dim=1 if x.dim() == 4 else 2)
        return self.diffusion_model(
            x,
            timesteps=t,
            context=c.get("crossattn"),
            y=c.get("vector"),
            **kwargs,
        )

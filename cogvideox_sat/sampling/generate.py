"""One sample, drawn the same way by sample_video.py and by validation during training.

Both condition on the prompt (and the first-frame image), seed every generator with the
sample's seed, sample latents of batch 1 and decode them with `decoding.decode_samples`, so a
validation sample is reproduced bit for bit by sample_video.py given the same weights, prompt,
seed and settings (see `sampling.reproduce`). Sample `s` of prompt line `i` gets seed
`seed + i * samples_per_prompt + s`: a video does not depend on which rank drew it or on what
was sampled before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from cogvideox_sat.sampling.conditioning import image_concat, prompt_conditions
from cogvideox_sat.training.rng import seed_everything


def sample_seed(base: int, prompt_index: int, sample_index: int, samples_per_prompt: int) -> int:
    return base + prompt_index * samples_per_prompt + sample_index


@torch.no_grad()
def prompt_inputs(
    engine: Any, text: str, image: Optional[torch.Tensor], latent_frames: int, seed: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(cond, uncond) of one prompt, computed under the prompt's first seed; `image` (image-to-
    video) is the first frame [1, 3, 1, H, W] in [-1, 1] (`images.condition_image`)."""
    seed_everything(seed)
    c, uc = prompt_conditions(engine, text)
    if image is not None:
        c["concat"] = uc["concat"] = image_concat(engine, image, latent_frames)
    return c, uc


@torch.no_grad()
def draw_latents(
    engine: Any, c: dict[str, torch.Tensor], uc: dict[str, torch.Tensor], seed: int, shape: Sequence[int]
) -> torch.Tensor:
    """Scaled latents [1, t, c, h, w] of one sample: every generator seeded with `seed` first."""
    seed_everything(seed)
    return engine.sample(c, uc=uc, batch_size=1, shape=tuple(shape))

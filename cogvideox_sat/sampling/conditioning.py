"""Conditions of one prompt: T5 text embeddings (and an all-zero unconditional side for CFG),
plus, for image-to-video, the latent of the first frame concatenated to the noisy latents."""

from __future__ import annotations

from typing import Any

import torch

TEXT_KEY = "txt"
# CogVideoX's unconditional side is an all-zero text embedding (officially, not the embedding of
# the empty negative prompt, which is still computed and then zeroed).
FORCE_UC_ZERO_EMBEDDINGS = (TEXT_KEY,)


def prompt_conditions(engine: Any, text: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(cond, uncond) for one prompt, batch of 1, on the conditioner's device."""
    keys = {e.input_key for e in engine.conditioner.embedders}
    unsupported = sorted(str(k) for k in keys - {TEXT_KEY})
    if unsupported:
        raise ValueError(f"sampling feeds only text ('{TEXT_KEY}') to the conditioner; embedders also want {unsupported}")
    return engine.conditioner.get_unconditional_conditioning(
        {TEXT_KEY: [text]}, batch_uc={TEXT_KEY: [""]}, force_uc_zero_embeddings=list(FORCE_UC_ZERO_EMBEDDINGS)
    )


@torch.no_grad()
def image_concat(engine: Any, image: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
    """Concat condition [1, t, c, h, w] of a one-frame clip `image` [1, 3, 1, H, W] in [-1, 1]:
    its latent in frame 0, zeros after it (or repeated, `noised_image_all_concat`).

    Latent scale: CogVideoX 1.0 I2V models get the scaled latent they were trained with (what
    the 1.0 sampler and diffusers use); 1.5 I2V models (with an `ofs` embedding) get it divided
    by scale_factor again, exactly as the official 1.5 sample_video.py does.
    """
    vae_weight = next(engine.first_stage_model.parameters())
    latent = engine.encode_first_stage(image.to(vae_weight.device, vae_weight.dtype))  # [1, c, 1, h, w]
    if engine.uses_ofs:
        latent = latent / engine.scale_factor
    latent = latent.permute(0, 2, 1, 3, 4).contiguous()  # [1, 1, c, h, w]
    frames = latent.new_zeros(latent.shape[0], num_latent_frames, *latent.shape[2:])
    return engine.image_condition(latent, frames)

"""Latents -> frames for sample videos, in temporal chunks (bounded VAE memory).

Default ("clip" decoding): every sampled latent frame is part of the clip, the first decodes
to one frame and the others to four, so 13 latents give 49 frames; models with a temporal
patch of 2 (CogVideoX 1.5) sample one padding latent in front, which is dropped (22 latents
-> 81 frames). `official=True` reproduces the official sample_video.py instead: latent frame
0 is always dropped and every remaining latent gives four frames (13 -> 48, 22 -> 84).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from cogvideox_sat.vae.chunking import even_chunk_sizes


def chunk_sizes(latent_frames: int, chunk_frames: Optional[int]) -> Optional[list[int]]:
    """Latent frames per decode chunk, `chunk_frames` each (None: the official chunks). A last
    chunk of one frame joins the one before (the VAE upsamples time only for >= 2 frames)."""
    if chunk_frames is None:
        return None
    sizes = even_chunk_sizes(latent_frames, chunk_frames)
    if len(sizes) > 1 and sizes[-1] < 2:
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def decode_options(engine: Any, latent_frames: int, official: bool = False, chunk_frames: Optional[int] = None) -> dict[str, Any]:
    """Keyword options of `engine.decode_first_stage` for `latent_frames` sampled latents."""
    if official:
        return {"chunk_sizes": chunk_sizes(latent_frames - 1, chunk_frames)}
    drop = engine.temporal_patch_size > 1
    return {
        "drop_first_latent": drop,
        "first_frame_separate": True,
        "chunk_sizes": chunk_sizes(latent_frames - int(drop), chunk_frames),
    }


def num_video_frames(latent_frames: int, temporal_patch_size: int, official: bool = False) -> int:
    """Frames a decoded sample has (see the module docstring)."""
    if official:
        return 4 * (latent_frames - 1)
    clip = latent_frames - int(temporal_patch_size > 1)
    return 1 + 4 * (clip - 1)


@torch.no_grad()
def decode_samples(
    engine: Any, z: torch.Tensor, official: bool = False, chunk_frames: Optional[int] = None
) -> torch.Tensor:
    """Scaled latents [b, t, c, h, w] -> float32 frames [b, T, 3, H, W] in [-1, 1]."""
    options = decode_options(engine, z.shape[1], official, chunk_frames)
    frames = engine.decode_first_stage(z.permute(0, 2, 1, 3, 4).contiguous(), **options)  # [b, 3, T, H, W]
    return frames.to(torch.float32).clamp(-1.0, 1.0).permute(0, 2, 1, 3, 4).contiguous()

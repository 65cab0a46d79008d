"""Training items from latent-cache entries, the same for folder (SFT) and shard datasets.

A cached item replaces the decoded clip (`mp4`) by its VAE latent and adds the caption's T5
embedding (`txt_emb`) and, when the entry keeps it, the clip's first frame (`first_frame`,
[-1, 1] (C, 1, H, W)), which image-to-video training noises and encodes at every step.
"""

from __future__ import annotations

from typing import Any

import torch

from cogvideox_sat.data.latent_cache import LatentCache
from cogvideox_sat.data.transforms import to_unit_range


def draw_latent(latent_kind: str, stored: torch.Tensor) -> torch.Tensor:
    """The clip's VAE latent (C', T', H', W'): as stored, or drawn from stored posterior moments."""
    if latent_kind == "latent":
        return stored
    # as the official sampling regularizer: mean + exp(logvar / 2) * noise, logvar clamped
    mean, logvar = stored.float().chunk(2, dim=0)
    return mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * torch.randn_like(mean)


def cached_item(cache: LatentCache, tensors: dict[str, torch.Tensor], meta: dict[str, str], fps: float) -> dict[str, Any]:
    """The item of one loaded entry: `mp4` (latent), `txt`, `txt_emb`, `num_frames`, `fps`, and
    `first_frame` when the cache keeps first frames."""
    item: dict[str, Any] = {
        "mp4": draw_latent(cache.latent_kind, tensors["latent"]),
        "txt": meta.get("caption", ""),
        "txt_emb": tensors["txt_emb"],
        "num_frames": int(meta["num_frames"]),
        "fps": fps,
    }
    frame0 = tensors.get("first_frame") if cache.has_first_frames else None
    if frame0 is not None:
        item["first_frame"] = to_unit_range(frame0)
    return item

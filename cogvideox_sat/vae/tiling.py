"""Spatial tiling of the decode: overlapping latent tiles decoded apart and blended.

For frames too large to decode at once (81 x 768 x 1360 needs ~20 GiB per full-resolution
activation in bf16). Tiles overlap by `overlap` latent pixels; in the overlap, the two
decodes are blended with linear ramps, which hides the seams where each tile saw zero padding
and its own GroupNorm statistics. The result approximates the full decode (tests bound it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TileSpec:
    """Tile and overlap sizes in latent pixels (multiply by the VAE's 8 for output pixels)."""

    height: int = 30
    width: int = 45
    overlap_height: int = 6
    overlap_width: int = 9

    def __post_init__(self) -> None:
        for size, overlap in ((self.height, self.overlap_height), (self.width, self.overlap_width)):
            if size < 1 or not 0 <= overlap < size:
                raise ValueError(f"need tile size >= 1 and 0 <= overlap < size, got {size}, {overlap}")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, length); the last tile ends exactly at `length`."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _ramp(size: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Blend weights along one axis: rising over the first `before`, falling over the last `after` pixels."""
    pos = torch.arange(size, device=device, dtype=torch.float32)
    w = torch.ones(size, device=device)
    if before:
        w = torch.minimum(w, (pos + 0.5) / before)
    if after:
        w = torch.minimum(w, (size - pos - 0.5) / after)
    return w


def decode_tiled(
    decode: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    tile: TileSpec,
    scale: int = 8,
) -> torch.Tensor:
    """Blend `decode(z_tile)` over overlapping tiles of z (B, C, t, h, w) -> (B, 3, T, scale*h, scale*w).

    `decode` is any latent -> frames function (a full or a chunked decode); `scale` is the
    VAE's spatial factor.
    """
    h, w = z.shape[-2:]
    rows, cols = tile_starts(h, tile.height, tile.overlap_height), tile_starts(w, tile.width, tile.overlap_width)
    out = weight = None
    dtype = z.dtype
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            # 1. Decode one latent tile: (B, C, t, th, tw) -> (B, 3, T, scale*th, scale*tw)
            th, tw = min(tile.height, h - r), min(tile.width, w - c)
            frames = decode(z[:, :, :, r : r + th, c : c + tw])
            dtype, frames = frames.dtype, frames.float()
            if out is None:
                out = frames.new_zeros(*frames.shape[:3], scale * h, scale * w)
                weight = frames.new_zeros(scale * h, scale * w)
            # 2. Ramps over the pixels shared with the previous / next tile on each axis
            above = scale * (rows[i - 1] + tile.height - r) if i > 0 else 0
            below = scale * (r + th - rows[i + 1]) if i + 1 < len(rows) else 0
            left = scale * (cols[j - 1] + tile.width - c) if j > 0 else 0
            right = scale * (c + tw - cols[j + 1]) if j + 1 < len(cols) else 0
            wt = _ramp(scale * th, above, below, out.device)[:, None] * _ramp(scale * tw, left, right, out.device)[None]
            # 3. Accumulate the weighted tile
            ys, xs = slice(scale * r, scale * (r + th)), slice(scale * c, scale * (c + tw))
            out[..., ys, xs] += frames * wt
            weight[ys, xs] += wt
    return (out / weight).to(dtype)

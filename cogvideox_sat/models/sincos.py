"""Fixed 3D sin-cos position table of CogVideoX-2B (`Basic3DPositionEmbeddingMixin`)."""

from __future__ import annotations

import torch


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(M,) positions -> (M, dim) `[sin(p w) | cos(p w)]`, w_i = 10000^(-i / (dim/2)), in float64."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2.0)
    omega = 1.0 / 10000.0**omega
    angles = positions.reshape(-1).to(torch.float64)[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_3d_table(
    dim: int,
    frames: int,
    height: int,
    width: int,
    height_interpolation: float = 1.0,
    width_interpolation: float = 1.0,
    time_interpolation: float = 1.0,
) -> torch.Tensor:
    """(frames * height * width, dim) float32 table in (t, h, w) raster order.

    Per token `[temporal (dim/4) | spatial (3 dim/4)]`, spatial = `[emb(w) | emb(h)]` (the official
    meshgrid puts w first). Coordinates are float32 `arange / interpolation` (1.875 for 2B
    stretches the 60x90 latent grid), angles float64, as the official numpy code.
    """
    if dim % 4:
        raise ValueError(f"3D sin-cos table needs hidden_size divisible by 4, got {dim}")
    spatial_dim, temporal_dim = dim // 4 * 3, dim // 4
    grid_h = torch.arange(height, dtype=torch.float32, device="cpu") / height_interpolation
    grid_w = torch.arange(width, dtype=torch.float32, device="cpu") / width_interpolation
    grid_t = torch.arange(frames, dtype=torch.float32, device="cpu") / time_interpolation

    w_coord = grid_w[None, :].expand(height, width)  # (h, w)
    h_coord = grid_h[:, None].expand(height, width)
    spatial = torch.cat([sincos_1d(w_coord, spatial_dim // 2), sincos_1d(h_coord, spatial_dim // 2)], dim=1)
    temporal = sincos_1d(grid_t, temporal_dim)  # (t, dim/4)

    table = torch.cat(
        [
            temporal[:, None, :].expand(frames, height * width, temporal_dim),
            spatial[None, :, :].expand(frames, height * width, spatial_dim),
        ],
        dim=-1,
    )
    return table.reshape(frames * height * width, dim).float()

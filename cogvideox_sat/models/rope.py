"""3D rotary position embedding of CogVideoX-5B / 1.5 (`Rotary3DPositionEmbeddingMixin`)."""

from __future__ import annotations

import torch


def rope_axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """(M,) positions -> (M, dim) angles, each frequency repeated for an interleaved pair."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device)[: dim // 2] / dim))
    angles = positions.float()[:, None] * inv_freq[None]
    return angles.repeat_interleave(2, dim=-1)


def rope_3d_angles(head_dim: int, frames: int, height: int, width: int, theta: float = 10000.0) -> torch.Tensor:
    """(frames, height, width, head_dim) float32 angles: head_dim split `[t d/4 | h 3d/8 | w 3d/8]`.

    Integer positions; the official interpolation arguments are accepted but have no effect.
    """
    dim_t, dim_h, dim_w = head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3
    if dim_t + dim_h + dim_w != head_dim:
        raise ValueError(f"3D RoPE needs hidden_size_head divisible by 8, got {head_dim}")
    t = rope_axis_angles(torch.arange(frames, device="cpu"), dim_t, theta)
    h = rope_axis_angles(torch.arange(height, device="cpu"), dim_h, theta)
    w = rope_axis_angles(torch.arange(width, device="cpu"), dim_w, theta)
    return torch.cat(
        [
            t[:, None, None, :].expand(frames, height, width, dim_t),
            h[None, :, None, :].expand(frames, height, width, dim_h),
            w[None, None, :, :].expand(frames, height, width, dim_w),
        ],
        dim=-1,
    )


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) over the last dimension."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_pairs(x) * sin; `cos`/`sin` broadcast against x (text rows: cos 1, sin 0)."""
    return x * cos + rotate_pairs(x) * sin


class Rotary:
    """RoPE for one forward call: per-token cos/sin rows shaped (1, S, 1, head_dim) for
    (B, S, heads, head_dim) tensors; text rows are cos 1 / sin 0, so text tokens pass unchanged
    and the whole sequence is rotated in one elementwise pass (no split and concat)."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, rotate_value: bool = False):
        self.cos = cos
        self.sin = sin
        self.rotate_value = rotate_value

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return apply_rotary(x, self.cos.to(x.dtype), self.sin.to(x.dtype))

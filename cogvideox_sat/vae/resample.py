"""2x down/up-sampling of the causal VAE, in space and (optionally) time.

Frame 0 is the clip's image frame: when the piece holds it (`first_frame_separate`), it is
never averaged with frame 1 nor duplicated, so 1 + 2n frames <-> 1 + n frames. Temporal
resampling only runs on more than one frame (a single image stays one frame), as in the
official code. State-dict layout: `<name>.conv.weight` of an nn.Conv2d (3x3, per frame).
Both run over time slices of the output (see slicing.py), so no full-size upsampled or
padded copy is ever held.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cogvideox_sat.vae import slicing
from cogvideox_sat.vae.time_context import TimeContext

TIME_DIM = 2


def per_frame_conv2d(conv: nn.Conv2d, x: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """A 2D conv applied to every frame of (B, C, T, H, W), as a (1, k, k) 3D conv: no (B T) copies."""
    return F.conv3d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, stride, stride), padding=(0, padding, padding))


def upsampled_source_frames(frames: int, double_time: bool, first_frame_separate: bool) -> list[int]:
    """For each output frame of the temporal upsampling, the input frame it copies (nearest)."""
    if not double_time:
        return list(range(frames))
    if first_frame_separate:
        return [0] + [1 + j // 2 for j in range(2 * (frames - 1))]
    return [j // 2 for j in range(2 * frames)]


def average_pairs(x: torch.Tensor) -> torch.Tensor:
    """Mean of frames (0, 1), (2, 3), ...: the official avg_pool1d(kernel 2), for every dtype."""
    return (x[:, :, 0::2] + x[:, :, 1::2]) * 0.5


def repeat_spatial(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest upsampling of H and W by an integer factor: a pure copy (any tensor size)."""
    b, c, t, h, w = x.shape
    x = x[:, :, :, :, None, :, None].expand(b, c, t, h, factor, w, factor)
    return x.reshape(b, c, t, factor * h, factor * w)


class DownSample3D(nn.Module):
    """Average pairs of frames (if compress_time), then a 3x3 stride-2 conv per frame."""

    def __init__(
        self, in_channels: int, with_conv: bool = True, compress_time: bool = False, out_channels: int | None = None
    ) -> None:
        super().__init__()
        self.with_conv = with_conv
        self.compress_time = compress_time
        if with_conv:
            self.conv = nn.Conv2d(in_channels, out_channels or in_channels, kernel_size=3, stride=2, padding=0)

    def _pooled_frames(self, x: torch.Tensor, s: int, e: int, first_separate: bool) -> torch.Tensor:
        """Output frames s..e-1 of the temporal average (1 + n or n frames from 1 + 2n or 2n)."""
        if not first_separate:
            return average_pairs(x[:, :, 2 * s : 2 * e])
        parts = [x[:, :, :1]] if s == 0 else []
        lo, hi = max(s, 1), e
        if hi > lo:
            parts.append(average_pairs(x[:, :, 2 * lo - 1 : 2 * hi - 1]))
        return torch.cat(parts, dim=TIME_DIM) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor, time: TimeContext) -> torch.Tensor:
        # (B, C, T, H, W) -> (B, C, T/2 or 1 + (T-1)/2 or T, H/2, W/2)
        t = x.shape[TIME_DIM]
        pool = self.compress_time and t > 1
        first_separate = pool and time.first_frame_separate
        out_frames = (1 + (t - 1) // 2 if first_separate else t // 2) if pool else t

        def compute(s: int, e: int) -> torch.Tensor:
            # 1. Time: average pairs of frames (frame 0 alone when it is the clip's first)
            h = self._pooled_frames(x, s, e, first_separate) if pool else x[:, :, s:e]
            # 2. Space: the official pads right/bottom only, then a stride-2 conv
            if self.with_conv:
                return per_frame_conv2d(self.conv, F.pad(h, (0, 1, 0, 1)), stride=2, padding=0)
            b, c, t, hh, ww = h.shape
            return h.reshape(b, c, t, hh // 2, 2, ww // 2, 2).mean(dim=(4, 6))

        per_slice = slicing.MAX_SLICE_ELEMENTS // max(2 * slicing.frame_elements(x), 1)
        return slicing.over_time(out_frames, per_slice if slicing.needs_slicing(x) else out_frames, compute)


class Upsample3D(nn.Module):
    """Nearest 2x upsampling of H, W (and T if compress_time), then a 3x3 conv per frame."""

    def __init__(self, in_channels: int, with_conv: bool = True, compress_time: bool = False) -> None:
        super().__init__()
        self.with_conv = with_conv
        self.compress_time = compress_time
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor, time: TimeContext) -> torch.Tensor:
        # (B, C, T, H, W) -> (B, C, 2T or 1 + 2(T-1) or T, 2H, 2W)
        double_time = self.compress_time and x.shape[TIME_DIM] > 1
        source = upsampled_source_frames(x.shape[TIME_DIM], double_time, time.first_frame_separate)
        index = torch.tensor(source, device=x.device)

        def compute(s: int, e: int) -> torch.Tensor:
            # 1. Nearest upsampling of the source frames of output frames s..e-1
            up = repeat_spatial(x.index_select(TIME_DIM, index[s:e]), 2)
            # 2. Smoothing conv per frame
            return per_frame_conv2d(self.conv, up, stride=1, padding=1) if self.with_conv else up

        out_frame_elements = 4 * slicing.frame_elements(x)
        whole = out_frame_elements * len(source) <= slicing.MAX_SLICE_ELEMENTS
        per_slice = len(source) if whole else slicing.MAX_SLICE_ELEMENTS // max(out_frame_elements, 1)
        return slicing.over_time(len(source), per_slice, compute)

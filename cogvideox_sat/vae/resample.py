"""2x down/up-sampling of the causal VAE, in space and (optionally) time.

Frame 0 is the clip's image frame: when the piece holds it (`first_frame_separate`), it is
never averaged with frame 1 nor duplicated, so 1 + 2n frames <-> 1 + n frames. Temporal
resampling only runs on more than one frame (a single image stays one frame), as in the
official code. State-dict layout: `<name>.conv.weight` of an nn.Conv2d (3x3, per frame).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cogvideox_sat.vae.causal_conv import conv3d_in_time_slices
from cogvideox_sat.vae.time_context import TimeContext

TIME_DIM = 2


def _per_frame_conv2d(conv: nn.Conv2d, x: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """A 2D conv applied to every frame of (B, C, T, H, W), as a (1, k, k) 3D conv: no (B T) copies."""
    weight = conv.weight.unsqueeze(2)  # (Cout, Cin, 1, k, k)

    def apply(chunk: torch.Tensor) -> torch.Tensor:
        return F.conv3d(chunk, weight, conv.bias, stride=(1, stride, stride), padding=(0, padding, padding))

    return conv3d_in_time_slices(apply, 1, x)


def _repeat_nearest(x: torch.Tensor, time: bool) -> torch.Tensor:
    """Nearest 2x upsampling of H, W (and T): a pure copy, safe for tensors of any size."""
    b, c, t, h, w = x.shape
    if time:
        x = x[:, :, :, None, :, None, :, None].expand(b, c, t, 2, h, 2, w, 2)
        return x.reshape(b, c, 2 * t, 2 * h, 2 * w)
    x = x[:, :, :, :, None, :, None].expand(b, c, t, h, 2, w, 2)
    return x.reshape(b, c, t, 2 * h, 2 * w)


class DownSample3D(nn.Module):
    """Average pairs of frames (if compress_time), then a 3x3 stride-2 conv per frame."""

    def __init__(self, in_channels: int, with_conv: bool = True, compress_time: bool = False, out_channels: int | None = None) -> None:
        super().__init__()
        self.with_conv = with_conv
        self.compress_time = compress_time
        if with_conv:
            self.conv = nn.Conv2d(in_channels, out_channels or in_channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor, time: TimeContext) -> torch.Tensor:
        # 1. Time: (B, C, T, H, W) -> (B, C, T/2 or 1 + (T-1)/2, H, W)
        if self.compress_time and x.shape[TIME_DIM] > 1:
            if time.first_frame_separate:
                first, rest = x[:, :, :1], x[:, :, 1:]
                if rest.shape[TIME_DIM] > 0:
                    rest = F.avg_pool3d(rest, kernel_size=(2, 1, 1))
                x = torch.cat([first, rest], dim=TIME_DIM)
            else:
                x = F.avg_pool3d(x, kernel_size=(2, 1, 1))
        # 2. Space: (B, C, T, H, W) -> (B, C, T, H/2, W/2); the official pads right/bottom only.
        if self.with_conv:
            return _per_frame_conv2d(self.conv, F.pad(x, (0, 1, 0, 1)), stride=2, padding=0)
        return F.avg_pool3d(x, kernel_size=(1, 2, 2))


class Upsample3D(nn.Module):
    """Nearest 2x upsampling of H, W (and T if compress_time), then a 3x3 conv per frame."""

    def __init__(self, in_channels: int, with_conv: bool = True, compress_time: bool = False) -> None:
        super().__init__()
        self.with_conv = with_conv
        self.compress_time = compress_time
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor, time: TimeContext) -> torch.Tensor:
        # 1. Nearest upsampling: (B, C, T, H, W) -> (B, C, 2T or 1 + 2(T-1), 2H, 2W)
        if self.compress_time and x.shape[TIME_DIM] > 1:
            if time.first_frame_separate:
                first = _repeat_nearest(x[:, :, :1], time=False)
                x = torch.cat([first, _repeat_nearest(x[:, :, 1:], time=True)], dim=TIME_DIM)
            else:
                x = _repeat_nearest(x, time=True)
        else:
            x = _repeat_nearest(x, time=False)
        # 2. Smoothing conv per frame.
        if self.with_conv:
            x = _per_frame_conv2d(self.conv, x, stride=1, padding=1)
        return x

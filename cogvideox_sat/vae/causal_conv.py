"""Causal 3D convolution: time padded with past frames only, height/width with zeros.

State-dict layout follows the official `ContextParallelCausalConv3d` (`<name>.conv.weight`).
Where the past frames come from (frame 0 replicated, previous chunk, previous rank) is the
caller's `TimeContext`'s business, not this layer's.
"""

from __future__ import annotations

import torch
from torch import nn

from cogvideox_sat.vae.slicing import causal_conv_over_time, per_frame_over_time
from cogvideox_sat.vae.time_context import TimeContext


class CausalConv3d(nn.Module):
    """3D conv whose output frame t sees input frames t-k+1..t (official ContextParallelCausalConv3d)."""

    def __init__(self, chan_in: int, chan_out: int, kernel_size: int | tuple[int, int, int], stride: int = 1) -> None:
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"height/width kernel sizes must be odd, got {(kt, kh, kw)}")
        if stride != 1:
            raise ValueError("the causal VAE convolutions have stride 1 (resampling is separate)")
        self.time_pad = kt - 1
        # Zero padding of height/width is done by the conv itself: no padded copy of the input.
        self.conv = nn.Conv3d(chan_in, chan_out, (kt, kh, kw), stride=1, padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor, time: TimeContext) -> torch.Tensor:
        # (B, Cin, T, H, W) + (B, Cin, kt - 1, H, W) past frames -> (B, Cout, T, H, W)
        before = time.preceding_frames(self, x, self.time_pad)
        return causal_conv_over_time(self.conv, before, x)


class PointwiseConv3d(nn.Conv3d):
    """1x1x1 conv (official SafeConv3d with kernel 1, e.g. `nin_shortcut`), sliced when huge."""

    def __init__(self, chan_in: int, chan_out: int) -> None:
        super().__init__(chan_in, chan_out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame_over_time(super().forward, x)

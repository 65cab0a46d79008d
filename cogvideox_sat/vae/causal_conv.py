"""Causal 3D convolution: time padded with past frames only, height/width with zeros.

State-dict layout follows the official `ContextParallelCausalConv3d` (`<name>.conv.weight`).
Where the past frames come from (frame 0 replicated, previous chunk, previous rank) is the
caller's `TimeContext`'s business, not this layer's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from cogvideox_sat.vae.time_context import TimeContext

# Inputs above this many elements are convolved in time slices: cuDNN's 3D convolutions
# fail or fall back to slow kernels past 2**31 elements, and slices bound the workspace.
# (The official SafeConv3d slices above 2 GiB of bf16, i.e. 2**30 elements, too.)
MAX_CONV_ELEMENTS = 2**30


def conv3d_in_time_slices(
    conv: Callable[[torch.Tensor], torch.Tensor], kernel_t: int, x: torch.Tensor, max_elements: int = MAX_CONV_ELEMENTS
) -> torch.Tensor:
    """`conv(x)` for a time-stride-1, time-unpadded conv, computed over time slices if x is huge."""
    if x.numel() <= max_elements:
        return conv(x)
    overlap = kernel_t - 1
    out_frames = x.shape[2] - overlap
    slices = min(out_frames, math.ceil(x.numel() / max_elements))
    step = math.ceil(out_frames / slices)
    outs = [conv(x[:, :, t : min(t + step, out_frames) + overlap]) for t in range(0, out_frames, step)]
    return torch.cat(outs, dim=2)


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
        # (B, Cin, T, H, W) -> (B, Cin, T + kt - 1, H, W) -> (B, Cout, T, H, W)
        x = time.causal_pad(self, x, self.time_pad)
        return conv3d_in_time_slices(self.conv, self.time_pad + 1, x)


class PointwiseConv3d(nn.Conv3d):
    """1x1x1 conv (official SafeConv3d with kernel 1, e.g. `nin_shortcut`), sliced when huge."""

    def __init__(self, chan_in: int, chan_out: int) -> None:
        super().__init__(chan_in, chan_out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv3d_in_time_slices(super().forward, 1, x)

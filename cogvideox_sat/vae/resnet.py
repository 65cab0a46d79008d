"""Residual block of the causal VAE (official ContextParallelResnetBlock3D, no time embedding).

Encoder blocks normalise with GroupNorm3D; decoder blocks (zq_ch given) with SpatialNorm3D,
conditioned on the latents. State-dict names: norm1, conv1, norm2, conv2 and, when the
channel count changes, nin_shortcut (1x1x1) or conv_shortcut (causal 3x3x3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cogvideox_sat.vae.causal_conv import CausalConv3d, PointwiseConv3d
from cogvideox_sat.vae.normalization import GroupNorm3D, SpatialNorm3D
from cogvideox_sat.vae.time_context import TimeContext


class ResnetBlock3D(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        dropout: float = 0.0,
        conv_shortcut: bool = False,
        zq_ch: int | None = None,
        add_conv: bool = False,
        gather_norm: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.spatial_norm = zq_ch is not None

        def norm(channels: int) -> nn.Module:
            if self.spatial_norm:
                return SpatialNorm3D(channels, zq_ch, add_conv=add_conv, gather=gather_norm)
            return GroupNorm3D(channels, gather=gather_norm)

        self.norm1 = norm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, kernel_size=3)
        self.norm2 = norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_channels, out_channels, kernel_size=3)
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = CausalConv3d(in_channels, out_channels, kernel_size=3)
            else:
                self.nin_shortcut = PointwiseConv3d(in_channels, out_channels)

    def _norm(self, norm: nn.Module, h: torch.Tensor, zq: torch.Tensor | None, time: TimeContext) -> torch.Tensor:
        return norm(h, zq, time) if self.spatial_norm else norm(h, time)

    def forward(self, x: torch.Tensor, time: TimeContext, zq: torch.Tensor | None = None) -> torch.Tensor:
        # (B, Cin, T, H, W) -> (B, Cout, T, H, W); without autograd, intermediates are updated in place
        # 1. norm -> swish -> causal conv
        h = self._norm(self.norm1, x, zq, time)
        h = self.conv1(F.silu(h, inplace=not h.requires_grad), time)
        # 2. norm -> swish -> dropout -> causal conv
        h = self._norm(self.norm2, h, zq, time)
        h = self.conv2(self.dropout(F.silu(h, inplace=not h.requires_grad)), time)
        # 3. shortcut to the new channel count, residual sum
        if hasattr(self, "conv_shortcut"):
            x = self.conv_shortcut(x, time)
        elif hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h if h.requires_grad else h.add_(x)

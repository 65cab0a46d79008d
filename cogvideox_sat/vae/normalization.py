"""Group norms of the causal VAE: plain/context-parallel GroupNorm and the decoder's SpatialNorm3D.

Official fixed choices: 32 groups, eps 1e-6, affine (so channel counts are multiples of 32).
With `gather=True` and a context-parallel group, the statistics (mean and variance per
sample and group) are reduced over all ranks, so every rank normalises with the statistics of
the whole clip, as one process would. Only two (B, 32) sums cross the network per call, where
the official ContextParallelGroupNorm all-gathers the whole activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cogvideox_sat.vae.causal_conv import CausalConv3d
from cogvideox_sat.vae.time_context import TimeContext

NUM_GROUPS = 32
EPS = 1e-6
TIME_DIM = 2


class GroupNorm3D(nn.GroupNorm):
    """GroupNorm over (C/G, T, H, W); with `gather`, statistics span the context-parallel group."""

    def __init__(self, num_channels: int, gather: bool = False) -> None:
        super().__init__(num_groups=NUM_GROUPS, num_channels=num_channels, eps=EPS, affine=True)
        self.gather = gather

    def forward(self, x: torch.Tensor, time: TimeContext) -> torch.Tensor:
        if not (self.gather and time.group is not None):
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return self._group_statistics_norm(x, time)

    def _group_statistics_norm(self, x: torch.Tensor, time: TimeContext) -> torch.Tensor:
        b, c = x.shape[:2]
        stats_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        xg = x.reshape(b, self.num_groups, -1).to(stats_dtype)  # (B, G, C/G * T_local * H * W)
        # 1. Global mean: sums and element counts over all ranks.
        count = torch.full((b, self.num_groups), float(xg.shape[-1]), dtype=stats_dtype, device=x.device)
        totals = time.reduce_sum(torch.stack([xg.sum(-1), count]))
        mean = totals[0] / totals[1]
        # 2. Global variance from deviations around the global mean (no E[x^2]-E[x]^2 cancellation).
        centered = xg - mean[..., None]
        var = time.reduce_sum(centered.square().sum(-1)) / totals[1]
        # 3. Normalise and apply the per-channel affine.
        y = (centered * torch.rsqrt(var + self.eps)[..., None]).reshape(x.shape)
        shape = (1, c) + (1,) * (x.dim() - 2)
        return (y * self.weight.to(stats_dtype).view(shape) + self.bias.to(stats_dtype).view(shape)).to(x.dtype)


def resize_like(zq: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of latents (B, C, t, h, w) to (T, H, W) (integer factors)."""
    return F.interpolate(zq, size=size, mode="nearest")


class SpatialNorm3D(nn.Module):
    """Decoder norm conditioned on the latents: GroupNorm(f) * conv_y(zq) + conv_b(zq).

    zq is resized to f's frames and pixels by nearest neighbour; when frame 0 is separate,
    latent frame 0 maps to output frame 0 alone and the rest stretch over the other frames.
    """

    def __init__(self, f_channels: int, zq_channels: int, add_conv: bool = False, gather: bool = False) -> None:
        super().__init__()
        self.norm_layer = GroupNorm3D(f_channels, gather=gather)
        self.add_conv = add_conv
        if add_conv:
            self.conv = CausalConv3d(zq_channels, zq_channels, kernel_size=3)
        self.conv_y = CausalConv3d(zq_channels, f_channels, kernel_size=1)
        self.conv_b = CausalConv3d(zq_channels, f_channels, kernel_size=1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor, time: TimeContext) -> torch.Tensor:
        t, h, w = f.shape[-3:]
        # 1. Latents to f's resolution: (B, Cz, t_z, h_z, w_z) -> (B, Cz, T, H, W)
        if time.first_frame_separate and t > 1:
            zq = torch.cat(
                [resize_like(zq[:, :, :1], (1, h, w)), resize_like(zq[:, :, 1:], (t - 1, h, w))], dim=TIME_DIM
            )
        else:
            zq = resize_like(zq, (t, h, w))
        if self.add_conv:
            zq = self.conv(zq, time)
        # 2. Modulated group norm: (B, Cf, T, H, W)
        return self.norm_layer(f, time) * self.conv_y(zq, time) + self.conv_b(zq, time)

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

from cogvideox_sat.vae import slicing
from cogvideox_sat.vae.causal_conv import CausalConv3d
from cogvideox_sat.vae.resample import repeat_spatial
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
        gathered = self.gather and time.group is not None
        if not gathered and not slicing.needs_slicing(x):
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        # Statistics over the group (or over time slices of a huge tensor), then x * a + b.
        mean, rstd = self._statistics(x, time if gathered else None)
        return self._normalize(x, mean, rstd)

    @staticmethod
    def _frames_per_slice(x: torch.Tensor) -> int:
        # A quarter of the usual budget: each slice is upcast to float32 and has 2-3 temporaries.
        return slicing.MAX_SLICE_ELEMENTS // 4 // max(slicing.frame_elements(x), 1)

    def _slices(self, x: torch.Tensor) -> list[tuple[int, int]]:
        return slicing.slice_bounds(x.shape[TIME_DIM], self._frames_per_slice(x))

    def _statistics(self, x: torch.Tensor, time: TimeContext | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and 1/std per (sample, group), in float32 (float64 for float64 x): (B, G) each."""
        b, c = x.shape[:2]
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        reduce = time.reduce_sum if time is not None else (lambda t: t)

        def group_sums(fn) -> torch.Tensor:
            return sum(fn(x[:, :, s:e].to(dtype)).reshape(b, self.num_groups, -1).sum(-1) for s, e in self._slices(x))

        # 1. Mean from sums and element counts over all slices (and ranks).
        count = torch.full((b, self.num_groups), x[0, : c // self.num_groups].numel(), dtype=dtype, device=x.device)
        totals = reduce(torch.stack([group_sums(lambda t: t), count]))
        mean = totals[0] / totals[1]
        # 2. Variance from deviations around that mean (no E[x^2] - E[x]^2 cancellation).
        mean_c = self._per_channel(mean, c)
        var = reduce(group_sums(lambda t: (t - mean_c).square())) / totals[1]
        return mean, torch.rsqrt(var + self.eps)

    def _per_channel(self, stat: torch.Tensor, channels: int) -> torch.Tensor:
        """(B, G) -> (B, C, 1, 1, 1), each group's value repeated over its channels."""
        return stat.repeat_interleave(channels // self.num_groups, dim=1)[:, :, None, None, None]

    def _normalize(self, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        scale = self._per_channel(rstd, c) * self.weight.to(rstd.dtype)[None, :, None, None, None]
        shift = self.bias.to(rstd.dtype)[None, :, None, None, None] - self._per_channel(mean, c) * scale

        def normalized(s: int, e: int) -> torch.Tensor:
            return (x[:, :, s:e].to(scale.dtype) * scale + shift).to(x.dtype)

        return slicing.over_time(x.shape[TIME_DIM], self._frames_per_slice(x), normalized)


def latent_source_frames(frames: int, latent_frames: int, first_frame_separate: bool) -> list[int]:
    """For each of `frames` frames, the latent frame nearest-neighbour resizing copies.

    Frame 0 alone maps to latent 0 when first_frame_separate; the counts have integer ratios.
    """
    if first_frame_separate and frames > 1:
        return [0] + [1 + (j * (latent_frames - 1)) // (frames - 1) for j in range(frames - 1)]
    return [(j * latent_frames) // frames for j in range(frames)]


def resize_latents(zq: torch.Tensor, source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """zq (B, Cz, t, h, w) -> (B, Cz, len(source), H, W) by nearest neighbour (official interpolate)."""
    zq = zq.index_select(TIME_DIM, source)
    (h, w), (big_h, big_w) = zq.shape[-2:], size
    if big_h % h == 0 and big_w % w == 0 and big_h // h == big_w // w:
        return repeat_spatial(zq, big_h // h)
    return F.interpolate(zq, size=(zq.shape[TIME_DIM], big_h, big_w), mode="nearest")


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
        # (B, Cf, T, H, W), latents (B, Cz, t, h, w) -> (B, Cf, T, H, W)
        t = f.shape[TIME_DIM]
        source = torch.tensor(latent_source_frames(t, zq.shape[TIME_DIM], time.first_frame_separate), device=f.device)
        # 1. Group norm of f
        y = self.norm_layer(f, time)
        # 2. Modulation by the latents resized to f's frames and pixels
        if y.requires_grad or self.add_conv:
            z = resize_latents(zq, source, f.shape[-2:])
            if self.add_conv:
                z = self.conv(z, time)
            return y * self.conv_y(z, time) + self.conv_b(z, time)
        # Inference: modulate y in place, a time slice at a time (no full-size factors).
        per_slice = slicing.MAX_SLICE_ELEMENTS // max(slicing.frame_elements(f), 1)
        for s, e in slicing.slice_bounds(t, per_slice):
            z = resize_latents(zq, source[s:e], f.shape[-2:])
            y[:, :, s:e].mul_(self.conv_y(z, time)).add_(self.conv_b(z, time))
        return y

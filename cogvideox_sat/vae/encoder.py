"""Causal 3D VAE encoder (official vae_modules.cp_enc_dec.ContextParallelEncoder3D).

(B, in_channels, 1 + 4k, H, W) -> moments (B, 2*z_channels, 1 + k, H/2^(L-1), W/2^(L-1)) with
L = len(ch_mult); the first log2(temporal_compress_times) levels also halve time (frame 0 kept).
Constructor parameters and state-dict keys follow the official class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cogvideox_sat.vae.causal_conv import CausalConv3d
from cogvideox_sat.vae.normalization import GroupNorm3D
from cogvideox_sat.vae.resample import DownSample3D
from cogvideox_sat.vae.resnet import ResnetBlock3D
from cogvideox_sat.vae.time_context import TimeContext


def check_attn_resolutions(attn_resolutions: Sequence[int]) -> None:
    """The official 3D VAE builds no attention whatever attn_resolutions says; so do we."""
    if attn_resolutions:
        warnings.warn(
            f"attn_resolutions={list(attn_resolutions)} is ignored: the official CogVideoX 3D VAE "
            "builds no attention layers (and its checkpoints have none)",
            stacklevel=3,
        )


class ContextParallelEncoder3D(nn.Module):
    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
        in_channels: int,
        resolution: int,
        z_channels: int,
        double_z: bool = True,
        pad_mode: str = "first",
        temporal_compress_times: int = 4,
        gather_norm: bool = False,
    ) -> None:
        """Official parameters. out_ch, resolution and pad_mode are accepted and unused (as in the
        official class: padding always replicates frame 0)."""
        super().__init__()
        check_attn_resolutions(attn_resolutions)
        ch_mult = tuple(ch_mult)
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.temporal_compress_level = int(math.log2(temporal_compress_times))

        self.conv_in = CausalConv3d(in_channels, ch, kernel_size=3)
        in_ch_mult = (1,) + ch_mult
        self.down = nn.ModuleList()
        block_in = ch
        for level in range(self.num_resolutions):
            block_in, block_out = ch * in_ch_mult[level], ch * ch_mult[level]
            down = nn.Module()
            down.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                down.block.append(ResnetBlock3D(block_in, block_out, dropout=dropout, gather_norm=gather_norm))
                block_in = block_out
            down.attn = nn.ModuleList()  # kept empty: the official module has the attribute, no layers
            if level != self.num_resolutions - 1:
                down.downsample = DownSample3D(
                    block_in, resamp_with_conv, compress_time=level < self.temporal_compress_level
                )
            self.down.append(down)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock3D(block_in, block_in, dropout=dropout, gather_norm=gather_norm)
        self.mid.block_2 = ResnetBlock3D(block_in, block_in, dropout=dropout, gather_norm=gather_norm)

        self.norm_out = GroupNorm3D(block_in, gather=gather_norm)
        self.conv_out = CausalConv3d(block_in, 2 * z_channels if double_z else z_channels, kernel_size=3)

    def forward(self, x: torch.Tensor, use_cp: bool = True, *, time: TimeContext | None = None) -> torch.Tensor:
        """Moments of x (B, C, T, H, W). `use_cp` is the official flag, which the official encoder
        ignores; `time` places x on the clip's time axis (default: a whole clip, frame 0 first)."""
        time = time if time is not None else TimeContext(first_frame_separate=True)
        # 1. Stem: (B, Cin, T, H, W) -> (B, ch, T, H, W)
        h = self.conv_in(x, time)
        # 2. Down levels: residual blocks, then 2x down in space (and time on the first levels)
        for level, down in enumerate(self.down):
            for block in down.block:
                h = block(h, time)
            if level != self.num_resolutions - 1:
                h = down.downsample(h, time)
        # 3. Middle blocks at the lowest resolution
        h = self.mid.block_2(self.mid.block_1(h, time), time)
        # 4. Head: (B, C, t, h, w) -> (B, 2*z_channels, t, h, w)
        h = self.norm_out(h, time)
        return self.conv_out(F.silu(h, inplace=not h.requires_grad), time)

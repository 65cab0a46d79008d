"""Causal 3D VAE decoder (official vae_modules.cp_enc_dec.ContextParallelDecoder3D).

(B, z_channels, t, h, w) -> (B, out_ch, T, 8h, 8w) for ch_mult of length 4, where
T = 1 + 4(t-1) when frame 0 is kept separate (official use_cp=True) and T = 4t otherwise
(official use_cp=False, which the official wrapper forces when cp_size <= 1).
Every norm is a SpatialNorm3D conditioned on the input latents (zq = z).
Constructor parameters and state-dict keys follow the official class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cogvideox_sat.vae.causal_conv import CausalConv3d
from cogvideox_sat.vae.encoder import check_attn_resolutions
from cogvideox_sat.vae.normalization import SpatialNorm3D
from cogvideox_sat.vae.resample import Upsample3D
from cogvideox_sat.vae.resnet import ResnetBlock3D
from cogvideox_sat.vae.time_context import TimeContext


class ContextParallelDecoder3D(nn.Module):
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
        give_pre_end: bool = False,
        zq_ch: int | None = None,
        add_conv: bool = False,
        pad_mode: str = "first",
        temporal_compress_times: int = 4,
        gather_norm: bool = False,
    ) -> None:
        """Official parameters. in_channels, resolution, double_z and pad_mode are accepted and
        unused (the official decoder swallows double_z, which the official YAMLs pass)."""
        super().__init__()
        check_attn_resolutions(attn_resolutions)
        ch_mult = tuple(ch_mult)
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.give_pre_end = give_pre_end
        self.temporal_compress_level = int(math.log2(temporal_compress_times))
        zq_ch = zq_ch or z_channels

        def block(cin: int, cout: int) -> ResnetBlock3D:
            return ResnetBlock3D(cin, cout, dropout=dropout, zq_ch=zq_ch, add_conv=add_conv, gather_norm=gather_norm)

        block_in = ch * ch_mult[-1]
        self.conv_in = CausalConv3d(z_channels, block_in, kernel_size=3)

        self.mid = nn.Module()
        self.mid.block_1 = block(block_in, block_in)
        self.mid.block_2 = block(block_in, block_in)

        # `up[level]` is indexed like the encoder's `down[level]` (0 = full resolution) and
        # built from the lowest resolution upwards, as the official state-dict keys require.
        up_levels: list[nn.Module] = []
        for level in reversed(range(self.num_resolutions)):
            up = nn.Module()
            up.block = nn.ModuleList()
            block_out = ch * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                up.block.append(block(block_in, block_out))
                block_in = block_out
            up.attn = nn.ModuleList()  # kept empty: the official module has the attribute, no layers
            if level != 0:
                compress_time = level >= self.num_resolutions - self.temporal_compress_level
                up.upsample = Upsample3D(block_in, with_conv=resamp_with_conv, compress_time=compress_time)
            up_levels.insert(0, up)
        self.up = nn.ModuleList(up_levels)

        self.norm_out = SpatialNorm3D(block_in, zq_ch, add_conv=add_conv, gather=gather_norm)
        self.conv_out = CausalConv3d(block_in, out_ch, kernel_size=3)

    def forward(self, z: torch.Tensor, use_cp: bool = True, *, time: TimeContext | None = None) -> torch.Tensor:
        """Frames from latents z (B, Cz, t, h, w).

        `use_cp` is the official flag: True keeps frame 0 separate in the temporal upsampling.
        `time` (if given) replaces it and places z on the clip's time axis (streaming, CP).
        """
        time = time if time is not None else TimeContext(first_frame_separate=use_cp)
        # 1. Stem: (B, Cz, t, h, w) -> (B, C, t, h, w); every norm below is conditioned on zq = z
        h = self.conv_in(z, time)
        # 2. Middle blocks at the lowest resolution
        h = self.mid.block_2(self.mid.block_1(h, time, z), time, z)
        # 3. Up levels, lowest resolution first: blocks, then 2x up in space (and time on the last levels)
        for level in reversed(range(self.num_resolutions)):
            for blk in self.up[level].block:
                h = blk(h, time, z)
            if level != 0:
                h = self.up[level].upsample(h, time)
        if self.give_pre_end:
            return h
        # 4. Head: (B, C, T, H, W) -> (B, out_ch, T, H, W)
        h = self.norm_out(h, z, time)
        return self.conv_out(F.silu(h, inplace=not h.requires_grad), time)

    def get_last_layer(self) -> torch.Tensor:
        return self.conv_out.conv.weight

"""The CogVideoX 3D VAE as the engine uses it (official VideoAutoencoderInferenceWrapper).

Built from the official `first_stage_config` block; no pytorch_lightning. Two surfaces:

- the official one: `encode(x)`, `decode(z, clear_fake_cp_cache=..., use_cp=...)`, with the
  official quirks kept (cp_size <= 1 forces use_cp=False, so `decode` maps t latents to 4t
  frames; a decode with clear_fake_cp_cache=False leaves its causal tails for the next call);
- the explicit one: `encode_distribution(x)`, `decode_chunk(z, past, first_frame_separate)`
  returning (frames, next_past), which `first_stage.py` builds the engine helpers on.

Context parallelism (cp_size > 1): the clip's frames are cut over the ranks of the
context-parallel group, each rank encodes/decodes its frames with halos from its predecessor,
and the pieces are gathered again. The group is handed in (`set_context_parallel_group`, done by
the engine from `cogvideox_sat.distributed`, or `group=` per call); this module looks none up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from cogvideox_sat.distributed import group_rank, group_size
from cogvideox_sat.registry import instantiate_from_config
from cogvideox_sat.vae import cp_ops
from cogvideox_sat.io.load_report import LoadReport
from cogvideox_sat.io.vae_checkpoint import load_vae_state
from cogvideox_sat.vae.regularizer import DiagonalGaussianDistribution
from cogvideox_sat.vae.time_context import TimeContext
from cogvideox_sat.vae.time_split import (
    TEMPORAL_COMPRESSION,
    balanced_groups,
    check_cp_groups,
    check_frame_count,
    piece_sizes,
)

StreamState = dict[nn.Module, torch.Tensor]
ProcessGroup = Any


class VideoAutoencoderInferenceWrapper(nn.Module):
    """Encoder + Gaussian regularizer + decoder of the CogVideoX 3D causal VAE."""

    path_params: ClassVar[tuple[str, ...]] = ("ckpt_path",)

    def __init__(
        self,
        cp_size: int = 0,
        *,
        encoder_config: Mapping[str, Any],
        decoder_config: Mapping[str, Any],
        regularizer_config: Mapping[str, Any],
        loss_config: Mapping[str, Any] | None = None,
        ckpt_path: str | None = None,
        ignore_keys: Sequence[str] = (),
    ) -> None:
        """Official parameters (the others of the official training class are not accepted).

        loss_config: built and kept as `self.loss` (the configs give torch.nn.Identity).
        ckpt_path: official `3d-vae.pt`; loaded strictly after dropping `ignore_keys` prefixes.
        """
        super().__init__()
        self.cp_size = int(cp_size)
        self.encoder = instantiate_from_config(encoder_config)
        self.decoder = instantiate_from_config(decoder_config)
        self.loss = instantiate_from_config(loss_config) if loss_config is not None else nn.Identity()
        self.regularization = instantiate_from_config(regularizer_config)
        self.load_report: LoadReport | None = None
        if ckpt_path is not None:
            self.load_report = load_vae_state(self, ckpt_path, ignore_keys=list(ignore_keys))
        # Official surface only: causal tails kept between decode(..., clear_fake_cp_cache=False)
        # calls. The explicit API (decode_chunk) passes this state in and out instead.
        self._official_stream: StreamState | None = None
        # the group the official surface splits time over when a call names none
        self.context_parallel_group: ProcessGroup | None = None

    # ------------------------------------------------------------------ context parallelism

    def set_context_parallel_group(self, group: ProcessGroup | None) -> None:
        """The group `encode` / `decode` split time over when a call passes none (None: no group)."""
        self.context_parallel_group = group

    def _cp_group(self, use_cp: bool, group: ProcessGroup | None) -> ProcessGroup | None:
        """The group to split time over, or None (official: cp_size <= 1 forces use_cp=False)."""
        if self.cp_size <= 1 or not use_cp:
            return None
        group = group if group is not None else self.context_parallel_group
        if group is None or group_size(group) != self.cp_size:
            raise ValueError(
                f"cp_size={self.cp_size} needs a context-parallel group of that size: create it with "
                "cogvideox_sat.distributed.initialize_context_parallel(cp_size) on every rank and hand "
                "it to the VAE (vae.set_context_parallel_group(group), or group=...), or set "
                "first_stage_config.params.cp_size to 1"
            )
        return group

    @staticmethod
    def _cp_groups(latent_groups: int, group: ProcessGroup) -> list[int]:
        """Latent frames after frame 0 per rank (each = 4 pixel frames), checked for length."""
        groups = balanced_groups(latent_groups, group_size(group))
        check_cp_groups(groups)
        return groups

    # ------------------------------------------------------------------ encode

    def encode_moments(
        self,
        x: torch.Tensor,
        *,
        input_cp: bool = False,
        output_cp: bool = False,
        use_cp: bool = True,
        group: ProcessGroup | None = None,
    ) -> torch.Tensor:
        """Raw encoder output cat([mean, logvar], 1): (B, C, 1+4k, H, W) -> (B, 2Cz, 1+k, H/8, W/8)."""
        # 1. Frame-count rule: 1 + 4k frames (checked on the whole clip)
        group = self._cp_group(use_cp, group)
        if group is None:
            check_frame_count(x.shape[2])
            return self.encoder(x, time=TimeContext(first_frame_separate=True))
        # 2. Context parallel: cut the clip into groups of 4 frames per rank, frame 0 on rank 0
        if input_cp:
            sizes = cp_ops.piece_sizes_of(x, group)
            groups = [(n - (1 if r == 0 else 0)) // TEMPORAL_COMPRESSION for r, n in enumerate(sizes)]
            check_cp_groups(groups)
        else:
            x = cp_ops.broadcast_from_first(x, group)
            groups = self._cp_groups(check_frame_count(x.shape[2]), group)
            x = cp_ops.scatter_time(x, piece_sizes(groups, TEMPORAL_COMPRESSION), group)
        rank = group_rank(group)
        moments = self.encoder(x, time=TimeContext(first_frame_separate=rank == 0, group=group))
        # 3. Gather the latent frames (1 + g_0 on rank 0, g_r elsewhere) unless the caller keeps pieces
        return moments if output_cp else cp_ops.gather_time(moments, piece_sizes(groups, 1), group)

    def encode_chunk(
        self,
        x: torch.Tensor,
        past: StreamState | None = None,
        *,
        first_frame_separate: bool,
        keep_state: bool = True,
    ) -> tuple[torch.Tensor, StreamState | None]:
        """Encoder moments of consecutive frames of a clip on this process, streaming.

        The first chunk holds 1 + 4a frames (first_frame_separate=True, past None), later ones
        4b frames with the state returned for the previous chunk. GroupNorm statistics are
        those of the chunk. Returns (moments, state for the next chunk or None).
        """
        frames = x.shape[2] - (1 if first_frame_separate else 0)
        if x.shape[2] == 0 or frames % TEMPORAL_COMPRESSION:
            raise ValueError(
                f"an encoder chunk needs {'1 + ' if first_frame_separate else ''}"
                f"{TEMPORAL_COMPRESSION}*k frames, got {x.shape[2]}"
            )
        time = TimeContext(first_frame_separate=first_frame_separate, past=past, next_past={} if keep_state else None)
        return self.encoder(x, time=time), time.next_past

    def encode_distribution(self, x: torch.Tensor, **cp_kwargs: Any) -> DiagonalGaussianDistribution:
        """The posterior q(z|x): `.mode()` / `.mean` is the deterministic latent, `.sample()` a draw.

        cp_kwargs: input_cp, output_cp, use_cp, group (see encode_moments).
        """
        return DiagonalGaussianDistribution(self.encode_moments(x, **cp_kwargs))

    def encode(
        self,
        x: torch.Tensor,
        return_reg_log: bool = False,
        unregularized: bool = False,
        input_cp: bool = False,
        output_cp: bool = False,
        use_cp: bool = True,
        *,
        group: ProcessGroup | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Official encode: x (B, C, 1+4k, H, W) in [-1, 1] -> latent (B, Cz, 1+k, H/8, W/8).

        The latent is a sample or the mode as regularizer_config's `sample` says (the official
        configs say False: the mean). unregularized=True returns (moments, {}), as official.
        """
        moments = self.encode_moments(x, input_cp=input_cp, output_cp=output_cp, use_cp=use_cp, group=group)
        if unregularized:
            return moments, {}
        z, reg_log = self.regularization(moments)
        cp_group = self._cp_group(use_cp, group)
        if cp_group is not None and not output_cp and getattr(self.regularization, "sample", False):
            z = cp_ops.broadcast_from_first(z, cp_group)  # one draw for the whole group
        return (z, reg_log) if return_reg_log else z

    # ------------------------------------------------------------------ decode

    def decode_chunk(
        self,
        z: torch.Tensor,
        past: StreamState | None = None,
        *,
        first_frame_separate: bool,
        keep_state: bool = True,
    ) -> tuple[torch.Tensor, StreamState | None]:
        """Decode consecutive latent frames of a clip on this process, streaming.

        past: the state returned for the previous chunk (None: z starts the clip; frame 0 is
            replicated as causal padding). first_frame_separate: z starts the clip and its frame 0
            decodes to one frame (1 + 4(t-1) frames) instead of four (4t frames).
        Returns (frames, state for the next chunk, or None when keep_state is False).
        GroupNorm statistics are those of the chunk (as in the official chunked decode).
        """
        time = TimeContext(first_frame_separate=first_frame_separate, past=past, next_past={} if keep_state else None)
        return self.decoder(z, time=time), time.next_past

    def decode(
        self,
        z: torch.Tensor,
        clear_fake_cp_cache: bool = True,
        use_cp: bool = True,
        input_cp: bool = False,
        output_cp: bool = False,
        *,
        group: ProcessGroup | None = None,
    ) -> torch.Tensor:
        """Official decode: z (B, Cz, t, h, w) -> frames (B, 3, T, 8h, 8w).

        cp_size <= 1 (every official config): T = 4t, and calls with clear_fake_cp_cache=False
        leave causal tails that the next call continues from (the official engine's chunked
        decode). Prefer `decode_chunk`, which passes that state explicitly.
        cp_size > 1 with use_cp: frames cut over the context-parallel group, T = 1 + 4(t-1).
        """
        cp_group = self._cp_group(use_cp, group)
        if cp_group is None:
            past, self._official_stream = self._official_stream, None
            x, state = self.decode_chunk(z, past, first_frame_separate=False, keep_state=not clear_fake_cp_cache)
            self._official_stream = state
            return x
        if self._official_stream is not None:
            raise ValueError("a context-parallel decode cannot continue a streamed (clear_fake_cp_cache=False) decode")
        # Context parallel: 1 + g_0 latent frames on rank 0, g_r on rank r; frame 0 separate on rank 0.
        if input_cp:
            sizes = cp_ops.piece_sizes_of(z, cp_group)
            groups = [n - (1 if r == 0 else 0) for r, n in enumerate(sizes)]
            check_cp_groups(groups)
        else:
            z = cp_ops.broadcast_from_first(z, cp_group)
            groups = self._cp_groups(z.shape[2] - 1, cp_group)
            z = cp_ops.scatter_time(z, piece_sizes(groups, 1), cp_group)
        rank = group_rank(cp_group)
        x = self.decoder(z, time=TimeContext(first_frame_separate=rank == 0, group=cp_group))
        return x if output_cp else cp_ops.gather_time(x, piece_sizes(groups, TEMPORAL_COMPRESSION), cp_group)

    def forward(self, x: torch.Tensor, **decode_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Official forward: (latent, reconstruction, regularizer log)."""
        z, reg_log = self.encode(x, return_reg_log=True)
        return z, self.decode(z, **decode_kwargs), reg_log

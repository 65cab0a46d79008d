"""The engine's first-stage calls: encode_first_stage / decode_first_stage of the official engine.

`decode_first_stage` reproduces the official SATVideoDiffusionEngine.decode_first_stage
exactly by default, quirks included (cp_size 1, as every official config and sample_video.py
set it):

1. z / scale_factor, in batches of `samples_per_call` samples;
2. latent frame 0 is DROPPED (z[:, :, 1:]);
3. the remaining t-1 frames are decoded in min(10, (t-1)//2) chunks (earlier chunks one
   longer), causal tails carried from chunk to chunk, GroupNorm statistics per chunk;
4. no frame is kept separate (use_cp=True is forced to False at cp_size 1): 4 frames per
   latent frame, i.e. 4(t-1) frames, e.g. 13 latents -> 48 frames.

Options turn the quirks off (`drop_first_latent=False`, `first_frame_separate=True` gives
the 1 + 4(t-1) frames of a clip), choose other chunks, or tile large frames spatially.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cogvideox_sat.vae.autoencoder import VideoAutoencoderInferenceWrapper
from cogvideox_sat.vae.chunking import decode_chunked, encode_chunked, official_chunk_sizes
from cogvideox_sat.vae.tiling import TileSpec, decode_tiled


def _batches(n: int, per_call: int | None) -> list[slice]:
    per_call = per_call or n
    return [slice(i, i + per_call) for i in range(0, n, per_call)]


@torch.no_grad()
def encode_first_stage(
    vae: VideoAutoencoderInferenceWrapper,
    x: torch.Tensor,
    scale_factor: float,
    samples_per_call: int | None = None,
    *,
    frames_per_chunk: int | None = None,
) -> torch.Tensor:
    """scale_factor * vae.encode(x) for x (B, C, 1+4k, H, W) in [-1, 1] -> (B, Cz, 1+k, H/8, W/8).

    As official (sample or mode per the regularizer's `sample`). frames_per_chunk (a multiple of
    4) streams long clips through the encoder in time chunks instead of one pass.
    """
    out = []
    for batch in _batches(x.shape[0], samples_per_call):
        if frames_per_chunk is None:
            out.append(vae.encode(x[batch]))
        else:
            out.append(vae.regularization(encode_chunked(vae, x[batch], frames_per_chunk))[0])
    return scale_factor * torch.cat(out, dim=0)


@torch.no_grad()
def decode_first_stage(
    vae: VideoAutoencoderInferenceWrapper,
    z: torch.Tensor,
    scale_factor: float,
    samples_per_call: int | None = None,
    *,
    drop_first_latent: bool = True,
    first_frame_separate: bool = False,
    chunk_sizes: Sequence[int] | None = None,
    tile: TileSpec | None = None,
) -> torch.Tensor:
    """Frames (B, 3, T, 8h, 8w) from scaled latents z (B, Cz, t, h, w); official by default.

    chunk_sizes: latent frames per chunk (after dropping frame 0); default: the official
    min(10, t // 2) chunks. tile: decode overlapping spatial tiles and blend them.
    """
    z = z / scale_factor
    if drop_first_latent:
        z = z[:, :, 1:]
    sizes = list(chunk_sizes) if chunk_sizes is not None else official_chunk_sizes(z.shape[2])

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return decode_chunked(vae, latents.contiguous(), sizes, first_frame_separate=first_frame_separate)

    out = []
    for batch in _batches(z.shape[0], samples_per_call):
        zb = z[batch]
        out.append(decode(zb) if tile is None else decode_tiled(decode, zb, tile, scale=spatial_scale(vae)))
    return torch.cat(out, dim=0)


def spatial_scale(vae: VideoAutoencoderInferenceWrapper) -> int:
    """Pixels per latent pixel: 2 ** (levels - 1) (8 for the released VAE)."""
    return 2 ** (vae.decoder.num_resolutions - 1)

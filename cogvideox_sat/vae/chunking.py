"""Memory-bounded encode/decode: a clip processed as consecutive time chunks, streaming.

Each chunk's causal convs continue from the previous chunk's last frames (the explicit
stream state of `decode_chunk` / `encode_chunk`), so the only difference from one full pass
is that GroupNorm statistics are those of the chunk: the official engine's chunked decode
(and diffusers' frame batching) make the same approximation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cogvideox_sat.vae.autoencoder import VideoAutoencoderInferenceWrapper
from cogvideox_sat.vae.time_split import TEMPORAL_COMPRESSION, check_frame_count


def official_chunk_sizes(latent_frames: int, max_chunks: int = 10) -> list[int]:
    """Chunks of the official decode_first_stage: min(10, t // 2) chunks, earlier ones longer.

    (The official code makes zero chunks for t = 1 and fails; one chunk is used here.)
    """
    chunks = max(1, min(max_chunks, latent_frames // 2))
    return [latent_frames // chunks + (1 if i < latent_frames % chunks else 0) for i in range(chunks)]


def even_chunk_sizes(total: int, per_chunk: int, first_extra: int = 0) -> list[int]:
    """`total` cut into chunks of `per_chunk` (the last may be shorter); chunk 0 gets `first_extra` more."""
    if per_chunk < 1:
        raise ValueError(f"chunk length must be >= 1, got {per_chunk}")
    rest = total - first_extra
    sizes = [per_chunk] * (rest // per_chunk) + ([rest % per_chunk] if rest % per_chunk else [])
    sizes = sizes or [0]
    sizes[0] += first_extra
    return sizes


@torch.no_grad()
def decode_chunked(
    vae: VideoAutoencoderInferenceWrapper,
    z: torch.Tensor,
    chunk_sizes: Sequence[int],
    *,
    first_frame_separate: bool = True,
) -> torch.Tensor:
    """Decode latents (B, Cz, t, h, w) chunk by chunk (chunk_sizes: latent frames per chunk).

    first_frame_separate: the clip's frame 0 decodes to one frame (1 + 4(t-1) frames in all);
    False is the official engine's choice (4t frames). Every chunk after the first needs >= 2
    latent frames (temporal upsampling only runs on more than one frame).
    """
    if sum(chunk_sizes) != z.shape[2]:
        raise ValueError(f"chunk sizes {list(chunk_sizes)} do not add up to {z.shape[2]} latent frames")
    if any(n < 2 for n in chunk_sizes[1:]) or chunk_sizes[0] < 1:
        raise ValueError(f"every chunk after the first needs >= 2 latent frames, got {list(chunk_sizes)}")
    frames, past, start = [], None, 0
    for i, n in enumerate(chunk_sizes):
        last = i == len(chunk_sizes) - 1
        x, past = vae.decode_chunk(
            z[:, :, start : start + n], past, first_frame_separate=first_frame_separate and i == 0, keep_state=not last
        )
        frames.append(x)
        start += n
    return torch.cat(frames, dim=2)


@torch.no_grad()
def encode_chunked(
    vae: VideoAutoencoderInferenceWrapper, x: torch.Tensor, frames_per_chunk: int = 8
) -> torch.Tensor:
    """Encoder moments of a long clip (B, C, 1 + 4k, H, W), `frames_per_chunk` frames at a time.

    Chunk 0 holds frame 0 plus `frames_per_chunk` frames, the others `frames_per_chunk`
    (a multiple of 4). Returns moments (B, 2Cz, 1 + k, h, w); regularize them with
    `DiagonalGaussianDistribution`.
    """
    check_frame_count(x.shape[2])
    if frames_per_chunk % TEMPORAL_COMPRESSION:
        raise ValueError(f"frames_per_chunk must be a multiple of {TEMPORAL_COMPRESSION}, got {frames_per_chunk}")
    sizes = even_chunk_sizes(x.shape[2], frames_per_chunk, first_extra=1)
    moments, past, start = [], None, 0
    for i, n in enumerate(sizes):
        last = i == len(sizes) - 1
        m, past = vae.encode_chunk(x[:, :, start : start + n], past, first_frame_separate=i == 0, keep_state=not last)
        moments.append(m)
        start += n
    return torch.cat(moments, dim=2)

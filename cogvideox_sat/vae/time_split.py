"""Frame-count rules of the causal VAE and how a clip's time axis is cut into pieces.

The VAE keeps frame 0 alone (the "image" frame) and compresses the other frames by 4, so a
clip has 1 + 4k frames and 1 + k latent frames. Context-parallel ranks and streaming chunks
therefore cut the clip into whole groups of 4 frames (1 latent frame each), frame 0 riding
with the first piece; a 2x temporal resampling never straddles two pieces that way.
"""

from __future__ import annotations

TEMPORAL_COMPRESSION = 4


def check_frame_count(frames: int, compression: int = TEMPORAL_COMPRESSION) -> int:
    """Validate a pixel-space frame count (1 + compression*k) and return k."""
    if frames < 1 or (frames - 1) % compression:
        lower = (max(frames - 1, 0) // compression) * compression + 1
        raise ValueError(
            f"the VAE needs 1 + {compression}*k frames (1, 5, 9, ..., 49, 81), got {frames}; "
            f"trim the clip to {lower} or pad it to {lower + compression} frames"
        )
    return (frames - 1) // compression


def latent_frames(frames: int, compression: int = TEMPORAL_COMPRESSION) -> int:
    """Latent frames the encoder makes from `frames` pixel frames (1 + k)."""
    return 1 + check_frame_count(frames, compression)


def balanced_groups(groups: int, parts: int) -> list[int]:
    """Split `groups` units over `parts` pieces as evenly as possible, later pieces larger.

    The first piece also carries frame 0, so it is the one that may come out short.
    """
    if parts < 1:
        raise ValueError(f"need at least one part, got {parts}")
    extra = groups % parts
    return [groups // parts + (1 if i >= parts - extra else 0) for i in range(parts)]


def piece_sizes(groups_per_piece: list[int], unit: int) -> list[int]:
    """Frame counts of the pieces: `unit` frames per group, plus frame 0 in the first piece."""
    return [g * unit + (1 if i == 0 else 0) for i, g in enumerate(groups_per_piece)]


def check_cp_groups(groups_per_rank: list[int]) -> None:
    """Context-parallel pieces must be long enough for halos and temporal resampling.

    Every rank after the first needs >= 2 latent frames: its temporal upsampling only runs on
    more than one frame (as in the official code), and the k=3 causal convs of the latent level
    take 2 frames of halo from the previous rank. The first rank needs >= 1 group.
    """
    if groups_per_rank[0] < 1 or any(g < 2 for g in groups_per_rank[1:]):
        n = len(groups_per_rank)
        raise ValueError(
            f"clip too short for context parallelism over {n} ranks: latent frames per rank "
            f"would be {[g + (1 if i == 0 else 0) for i, g in enumerate(groups_per_rank)]}, every "
            f"rank but the first needs >= 2. Use >= {2 * n} latent frames "
            f"({4 * (2 * n - 1) + 1} pixel frames) or a smaller cp_size."
        )

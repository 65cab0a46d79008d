"""Which frames of a clip to decode: the official rules, an exact-fps rule, and bucket rules.

All functions are pure: (frame count, fps, ...) -> frame indices. The datasets decode only
these frames, then pad by repeating the last one up to the requested length.

Official SFT rule (`official_sft_indices`, the default of SFTDataset), three cases:
  A. the clip lasts longer than `max_num_frames` frames at the target fps: take frames from
     `skip` at an integer stride `(end - start) // max_num_frames` over the span those frames
     would cover at the source fps, keep the first `max_num_frames`;
  B. the clip has more than `max_num_frames` frames but is shorter at the target fps: stride
     `max(1, (len - 2 skip) // max_num_frames)` from `skip`, keep the first `max_num_frames`;
  C. otherwise: the largest 4k+1 run of consecutive frames after skipping `skip` at each end
     (the 3D VAE needs 4k+1 frames); `num_frames` reports that count.
Kept as official, knowingly: the integer stride in case A samples a 30 fps clip every 3rd
frame (10 fps, not 8), and cases B/C do not resample the fps at all. `exact_fps_indices`
(opt-in, `fps_sampling: exact`) samples at the target fps in every case.
Fixed, deliberately: where the official code crashed (a source fps below the target fps made
the stride 0; a span past the last frame indexed out of range; a clip with no frame left after
skipping) we drop the out-of-range indices or report the clip as too short.
"""

from __future__ import annotations

import math
import random

import numpy as np


def nearest_smaller_4k_plus_1(n: int) -> int:
    """Largest 4k+1 <= n (n >= 1)."""
    return n - (n - 1) % 4


def official_sft_indices(
    num_source_frames: int, source_fps: float, fps: float, max_num_frames: int, skip_frms_num: float
) -> tuple[np.ndarray, int]:
    """Frame indices (at most `max_num_frames`) and the `num_frames` label, as the official SFTDataset.

    Returns an empty index array when no frame is left after skipping (the caller skips the clip).
    """
    vlen, skip = num_source_frames, int(skip_frms_num)
    if vlen / source_fps * fps > max_num_frames:  # A: long enough at the target fps
        num_frames = max_num_frames
        end = int(skip + num_frames / fps * source_fps)
        step = max((end - skip) // num_frames, 1)
        indices = np.arange(skip, end, step)
        indices = indices[indices < vlen]
    elif vlen > max_num_frames:  # B: many frames, short at the target fps
        num_frames = max_num_frames
        end = vlen - skip
        indices = np.arange(skip, end, max((end - skip) // num_frames, 1))
    else:  # C: short clip, consecutive frames
        usable = vlen - 2 * skip
        if usable < 1:
            return np.zeros(0, dtype=np.int64), 0
        num_frames = nearest_smaller_4k_plus_1(usable)
        indices = np.arange(skip, skip + num_frames)
    return indices[:max_num_frames].astype(np.int64), num_frames


def available_frames(num_source_frames: int, source_fps: float, fps: float, skip_frms_num: float) -> int:
    """How many frames at `fps` fit in the clip after skipping `skip_frms_num` at both ends."""
    usable = num_source_frames - 2 * int(skip_frms_num)
    if usable < 1:
        return 0
    # frame k sits at source position k * source_fps / fps; the last must be < usable
    return int(math.floor((usable - 1) * fps / source_fps + 1e-9)) + 1


def exact_fps_indices(
    num_source_frames: int, source_fps: float, fps: float, num_frames: int, skip_frms_num: float, *, start: int | None = None
) -> np.ndarray:
    """`num_frames` indices sampled at exactly `fps` from `start` (default: `skip_frms_num`).

    Frame k is the source frame showing time k / fps. The caller checks that they fit.
    """
    start = int(skip_frms_num) if start is None else start
    k = np.arange(num_frames)
    return (start + np.floor(k * source_fps / fps + 1e-9)).astype(np.int64)


def exact_sft_indices(
    num_source_frames: int, source_fps: float, fps: float, max_num_frames: int, skip_frms_num: float
) -> tuple[np.ndarray, int]:
    """Opt-in SFT rule: as many frames as fit at the target fps (4k+1 when short), exact fps."""
    n = min(max_num_frames, available_frames(num_source_frames, source_fps, fps, skip_frms_num))
    if n < 1:
        return np.zeros(0, dtype=np.int64), 0
    if n < max_num_frames:
        n = nearest_smaller_4k_plus_1(n)
    return exact_fps_indices(num_source_frames, source_fps, fps, n, skip_frms_num), n


def official_webdataset_indices(
    num_source_frames: int,
    duration: float,
    source_fps: float,
    fps: float,
    num_frames: int,
    skip_frms_num: float,
    rng: random.Random,
) -> np.ndarray:
    """The official VideoDataset rule: a random start, then `num_frames` frames at the target fps.

    The official code drew the start from `random.randint(skip, max_seek + 1)` on the global
    RNG; we draw the same range from `rng` (seeded per rank and worker) and drop indices past
    the last frame (the official loader raised there and lost the sample).
    """
    skip = int(skip_frms_num)
    vlen = min(int(duration * source_fps) - 1, num_source_frames)
    span = num_frames / fps * source_fps
    max_seek = int(vlen - skip - span)
    if max_seek + 1 < skip:
        return np.zeros(0, dtype=np.int64)
    start = rng.randint(skip, max_seek + 1)
    end = int(start + span)
    indices = np.arange(start, end, (end - start) / num_frames).astype(np.int64)[:num_frames]
    return indices[indices < num_source_frames]

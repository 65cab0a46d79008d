"""Load one training clip: decode the sampled frames, pad, resize + center crop, scale to [-1, 1].

Shared by the SFT folder dataset, the WebDataset shards and the latent-cache builder, so all
three produce the same pixels for the same file and parameters.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cogvideox_sat.data import sampling
from cogvideox_sat.data.skips import BadSample
from cogvideox_sat.data.timeout import call_with_timeout
from cogvideox_sat.data.transforms import pad_last_frame, resize_center_crop
from cogvideox_sat.data.video_io import VideoInfo, VideoSource, open_video, read_frames, video_info

FPS_SAMPLING = ("official", "exact")


@dataclass(frozen=True)
class ClipSpec:
    """How to turn a video into a training clip."""

    size: tuple[int, int]  # (height, width) of the output
    fps: float  # target frame rate
    num_frames: int  # output length (max_num_frames, or a bucket's frames)
    skip_frms_num: float  # frames ignored at both ends (scene transitions)
    fps_sampling: str = "official"  # "official" SFT rule or "exact" fps
    max_frame_side: int = 8192  # frames with a larger side are rejected as too large
    resize: str = "bicubic"  # transforms.RESIZE_MODES


@dataclass(frozen=True)
class Clip:
    frames: torch.Tensor  # uint8 (T, C, H, W), T = spec.num_frames
    num_frames: int  # the official `num_frames` label (real frames before padding)


# (reader info) -> (indices, num_frames label); lets each dataset plug its own rule
IndexRule = Callable[[VideoInfo], "tuple[np.ndarray, int]"]


def sft_rule(spec: ClipSpec) -> IndexRule:
    """The SFT folder rule (official three cases, or exact fps)."""
    fn = sampling.official_sft_indices if spec.fps_sampling == "official" else sampling.exact_sft_indices
    return lambda info: fn(info.num_frames, info.fps, spec.fps, spec.num_frames, spec.skip_frms_num)


def bucket_rule(spec: ClipSpec, rng: random.Random | None = None) -> IndexRule:
    """Exactly `spec.num_frames` frames at the target fps (buckets never pad).

    From `skip_frms_num` (folders: deterministic), or from a random start drawn from `rng`
    (streams, like the official shard rule).
    """

    def rule(info: VideoInfo) -> tuple[np.ndarray, int]:
        if sampling.available_frames(info.num_frames, info.fps, spec.fps, spec.skip_frms_num) < spec.num_frames:
            return np.zeros(0, dtype=np.int64), 0
        start = int(spec.skip_frms_num)
        idx = sampling.exact_fps_indices(info.num_frames, info.fps, spec.fps, spec.num_frames, spec.skip_frms_num)
        if rng is not None:
            slack = info.num_frames - int(spec.skip_frms_num) - 1 - int(idx[-1])
            start = rng.randint(start, start + max(slack, 0))
            idx = idx - idx[0] + start
        return idx, spec.num_frames

    return rule


def webdataset_rule(spec: ClipSpec, duration: float | None, rng: random.Random) -> IndexRule:
    """The official shard rule: random start, target fps (duration from the metadata if known)."""

    def rule(info: VideoInfo) -> tuple[np.ndarray, int]:
        dur = duration if duration is not None else info.num_frames / info.fps
        idx = sampling.official_webdataset_indices(
            info.num_frames, dur, info.fps, spec.fps, spec.num_frames, spec.skip_frms_num, rng
        )
        return idx, spec.num_frames

    return rule


def load_clip(
    source: VideoSource, name: str, spec: ClipSpec, rule: IndexRule, timeout_s: float | None
) -> Clip:
    """Decode and transform one clip; BadSample on any problem (never another exception type)."""

    def decode() -> tuple[np.ndarray, int]:
        # 1. Open the container and read its header
        reader = open_video(source, name)
        info = video_info(reader, name)
        # 2. Choose the frames
        indices, num_frames = rule(info)
        if len(indices) == 0:
            raise BadSample("too_short", name, f"{info.num_frames} frames at {info.fps:g} fps")
        # 3. Decode only those
        return read_frames(reader, indices, name, spec.max_frame_side), num_frames

    try:
        frames, num_frames = call_with_timeout(decode, timeout_s)
    except TimeoutError as err:
        raise BadSample("timeout", name, str(err)) from None
    # 4. (T, H, W, C) -> (T, C, H, W), resize + crop, pad with the last frame (the official code
    #    padded first; resizing is per frame, so padding after gives the same pixels for less work)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    video = resize_center_crop(video, spec.size, spec.resize)
    return Clip(frames=pad_last_frame(video, spec.num_frames).contiguous(), num_frames=num_frames)


def probe(source: VideoSource, name: str, timeout_s: float | None, max_frame_side: int) -> tuple[VideoInfo, int, int]:
    """(info, height, width) of a video, decoding one frame; BadSample on any problem."""

    def run() -> tuple[VideoInfo, int, int]:
        reader = open_video(source, name)
        info = video_info(reader, name)
        first = read_frames(reader, np.zeros(1, dtype=np.int64), name, max_frame_side)
        return info, int(first.shape[1]), int(first.shape[2])

    try:
        return call_with_timeout(run, timeout_s)
    except TimeoutError as err:
        raise BadSample("timeout", name, str(err)) from None

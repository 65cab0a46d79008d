"""Video decoding with decord: open a file (or mp4 bytes), read its header, decode chosen frames.

Every failure becomes a `BadSample` with a reason, so datasets can skip the file and go on.
Only the frames asked for are decoded and kept (the official loader decoded the whole span
between the first and the last sampled frame, then threw most of it away).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Union

import numpy as np

from cogvideox_sat.data.skips import BadSample

VideoSource = Union[str, bytes]  # a path, or the bytes of a video file (a WebDataset member)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says, before decoding anything."""

    num_frames: int
    fps: float


def open_video(source: VideoSource, name: str):
    """A decord VideoReader over `source`; BadSample('corrupt') if the container is unreadable."""
    import decord  # imported here: decord loads ffmpeg libraries, which costs time at import

    if isinstance(source, (bytes, bytearray)) and len(source) == 0:
        raise BadSample("empty", name)
    try:
        uri = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        reader = decord.VideoReader(uri, num_threads=_decode_threads())
    except (RuntimeError, decord.DECORDError) as err:
        raise BadSample("corrupt", name, _first_line(err)) from None
    return reader


def video_info(reader, name: str) -> VideoInfo:
    """Frame count and average fps from the container (BadSample('corrupt') when nonsensical)."""
    num_frames = len(reader)
    fps = float(reader.get_avg_fps())
    if num_frames <= 0 or not np.isfinite(fps) or fps <= 0:
        raise BadSample("corrupt", name, f"container reports {num_frames} frames at {fps} fps")
    return VideoInfo(num_frames=num_frames, fps=fps)


def read_frames(reader, indices: np.ndarray, name: str, max_frame_side: int) -> np.ndarray:
    """Frames `indices` as uint8 (T, H, W, 3).

    The first frame is decoded alone and its size checked before the rest, so an absurdly
    large video is rejected after one frame instead of after all of them.
    """
    import decord

    indices = np.asarray(indices, dtype=np.int64)
    try:
        first = _as_numpy(reader[int(indices[0])])
        if max(first.shape[:2]) > max_frame_side:
            raise BadSample("too_large", name, f"frames are {first.shape[1]}x{first.shape[0]}, limit {max_frame_side}")
        if first.ndim != 3 or first.shape[2] != 3:
            raise BadSample("undecodable", name, f"decoder returned frames of shape {first.shape}")
        rest = _as_numpy(reader.get_batch(indices[1:])) if len(indices) > 1 else first[None, :0]
        return np.concatenate([first[None], rest.reshape(-1, *first.shape)], axis=0)
    except (RuntimeError, decord.DECORDError, IndexError, ValueError) as err:
        raise BadSample("undecodable", name, _first_line(err)) from None


def _decode_threads() -> int:
    # one decoder thread per DataLoader worker (the workers are the parallelism); in the main
    # process let ffmpeg choose, as the official loader did
    import torch.utils.data

    return 1 if torch.utils.data.get_worker_info() is not None else 0


def _as_numpy(frames) -> np.ndarray:
    # decord's native NDArray, or a torch tensor if someone set decord's bridge globally
    if hasattr(frames, "asnumpy"):
        return frames.asnumpy()
    return np.asarray(frames)


def _first_line(err: BaseException) -> str:
    """The gist of a decord error: its last line without the C++ source location."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    gist = re.split(r"\S+\.(?:cc|h):\d+: ", lines[-1])[-1]
    return gist.replace("Check failed: ", "")[-200:]

"""Writing generated videos: mp4 files and PNG contact sheets (a grid of frames to eyeball)."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import torch


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(T, C, H, W) in [-1, 1] -> (T, H, W, C) uint8."""
    if video.ndim != 4:
        raise ValueError(f"expected a (T, C, H, W) video, got shape {tuple(video.shape)}")
    frames = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 1).cpu().numpy()


MP4_NEEDS = "writing mp4 videos needs imageio-ffmpeg (a requirements.txt dependency): pip install imageio-ffmpeg"


def mp4_writer_available() -> bool:
    """Whether imageio can write H.264 mp4. Without imageio-ffmpeg it would pick another plugin
    for the .mp4 name and fail on the first frame."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def save_mp4(video: torch.Tensor, path: str | os.PathLike, fps: int) -> Path:
    """Save a (T, C, H, W) video in [-1, 1] as H.264 mp4."""
    import imageio

    if not mp4_writer_available():
        raise RuntimeError(f"cannot write {path}: {MP4_NEEDS}")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = to_uint8_frames(video)
    # macro_block_size=1: tiny demo frames (e.g. 64x96) must not be resized to multiples of 16
    with imageio.get_writer(str(path), fps=fps, codec="libx264", macro_block_size=1, quality=8) as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def contact_sheet(video: torch.Tensor, path: str | os.PathLike, max_frames: int = 16) -> Path:
    """Save up to `max_frames` evenly spaced frames of a (T, C, H, W) video as one PNG grid."""
    import imageio.v3 as iio

    frames = to_uint8_frames(video)
    pick = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    frames = frames[pick]
    cols = math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / cols)
    h, w, c = frames.shape[1:]
    sheet = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, frame in enumerate(frames):
        r, col = divmod(i, cols)
        sheet[r * h : (r + 1) * h, col * w : (col + 1) * w] = frame
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, sheet)
    return path

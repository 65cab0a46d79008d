"""Pixel transforms of the official loader: aspect-keeping resize, center crop, [-1, 1] range.

The official code resizes uint8 frames with torchvision's bicubic `resize` (antialiased,
clamped and rounded back to uint8) so that the shorter side relative to the target fits, then
crops the center. We compute the same with `torch.nn.functional.interpolate` (torchvision is
not a dependency), in chunks of frames so a 49-frame 1080p clip never exists as float32 at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK = 8  # frames resized at a time (bounds the float32 copy)
RESIZE_MODES = ("bicubic", "bilinear")


def resize_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """The official pre-crop size: the target height (wider clips) or width is matched exactly."""
    th, tw = target
    if width / height > tw / th:
        return th, int(width * th / height)
    return int(height * tw / width), tw


def resize_center_crop(frames: torch.Tensor, target: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """uint8 (T, C, H, W) -> uint8 (T, C, th, tw): resize keeping the aspect ratio, center crop.

    mode "bicubic": the official pixels (antialiased bicubic in float32, rounded to uint8);
    "bilinear": antialiased bilinear straight on uint8 (torch's vectorised kernel, about 20x
    faster at 720p, slightly softer pixels) for when the loader cannot keep up.
    """
    # 1. Resize (skipped when the size already matches: resampling at scale 1 is the identity)
    t, c, h, w = frames.shape
    rh, rw = resize_size(h, w, target)
    if (rh, rw) != (h, w) and mode == "bilinear":
        x = frames.contiguous(memory_format=torch.channels_last)
        frames = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    elif (rh, rw) != (h, w):
        chunks = []
        for i in range(0, t, _CHUNK):
            x = frames[i : i + _CHUNK].float()
            x = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
            chunks.append(x.clamp_(0, 255).round_().to(torch.uint8))
        frames = torch.cat(chunks)
    # 2. Center crop
    th, tw = target
    top, left = (rh - th) // 2, (rw - tw) // 2
    return frames[:, :, top : top + th, left : left + tw].contiguous()


def to_unit_range(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], exactly as the official `(x - 127.5) / 127.5`."""
    return frames.float().sub_(127.5).div_(127.5)  # in place: one float copy of the clip, not three


def pad_last_frame(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """First `num_frames` frames, padded by repeating the last one (not zeros), as official."""
    if len(frames) >= num_frames:
        return frames[:num_frames]
    pad = frames[-1:].expand(num_frames - len(frames), *frames.shape[1:])
    return torch.cat([frames, pad])

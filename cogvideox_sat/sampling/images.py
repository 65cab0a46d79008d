"""The conditioning image of image-to-video sampling, as a one-frame clip for the VAE.

The image is resized to cover the sampling size keeping its aspect ratio and center-cropped,
with the same transform the training loader applies to clips (so a fine-tuned model sees its
first frames prepared the way it was trained).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cogvideox_sat.data.transforms import resize_center_crop, to_unit_range


def load_condition_image(path: str | os.PathLike, size: Sequence[int]) -> torch.Tensor:
    """Image file -> float32 [1, 3, 1, height, width] in [-1, 1] (`size` = [height, width])."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"image-to-video: image '{path}' does not exist (prompt lines read 'prompt@@image_path'; "
            "relative paths are relative to the working directory)"
        )
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))  # [H, W, 3] uint8
    return condition_image(torch.from_numpy(pixels.copy()).permute(2, 0, 1), size)


def condition_image(pixels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """uint8 [3, H, W] -> float32 [1, 3, 1, height, width] in [-1, 1] (`size` = [height, width]);
    validation conditions on a clip's first frame through this too, so a PNG of that frame given
    to sample_video.py gives the same condition."""
    height, width = (int(v) for v in size)
    frames = resize_center_crop(pixels.unsqueeze(0), (height, width))  # [1, 3, H, W]
    return to_unit_range(frames).permute(1, 0, 2, 3).unsqueeze(0)  # [1, 3, 1, H, W]

"""Still images as one-frame clips: read one, pick its size, make the item a video would be.

A still trains as a clip of 1 frame: `mp4` float (1, C, H, W) in [-1, 1], `num_frames` 1,
which the 3D VAE encodes to 1 latent frame (1 = 4 * 0 + 1). It is resized and center-cropped
like a video frame (same transforms, same pixels as frame 0 of a clip of that image), to the
dataset's video size, or with buckets to the bucket size whose aspect ratio fits it best, so a
batch of stills never holds a padded video and a video batch never holds a still.

Shared by the SFT folders (files under the folder) and the WebDataset shards (jpg/png members).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from cogvideox_sat.data.buckets import Bucket, choose_bucket
from cogvideox_sat.data.clip import Clip
from cogvideox_sat.data.skips import BadSample
from cogvideox_sat.data.transforms import resize_center_crop

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IMAGE_EXTS = tuple(s[1:] for s in IMAGE_SUFFIXES)  # WebDataset member extensions
ImageSource = Union[str, bytes]  # a path, or the bytes of an image file


def is_image_path(path: str) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def _open(source: ImageSource, name: str):
    from PIL import Image

    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise BadSample("empty", name)
        return Image.open(io.BytesIO(source))
    return Image.open(source)


def image_size(source: ImageSource, name: str, max_frame_side: int = 8192) -> tuple[int, int]:
    """(height, width) from the image header (nothing decoded); BadSample when unreadable."""
    from PIL import UnidentifiedImageError

    try:
        with _open(source, name) as img:
            w, h = img.size
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise BadSample("corrupt", name, str(err)) from None
    if max(h, w) > max_frame_side:
        raise BadSample("too_large", name, f"image is {w}x{h}, limit {max_frame_side}")
    return h, w


def read_image(source: ImageSource, name: str, max_frame_side: int = 8192) -> torch.Tensor:
    """uint8 (1, C, H, W) RGB pixels of an image; BadSample on any problem."""
    from PIL import UnidentifiedImageError

    try:
        with _open(source, name) as img:
            if max(img.size) > max_frame_side:
                raise BadSample("too_large", name, f"image is {img.size[0]}x{img.size[1]}, limit {max_frame_side}")
            pixels = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise BadSample("corrupt", name, str(err)) from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None]


def load_still(source: ImageSource, name: str, size: tuple[int, int], resize: str, max_frame_side: int = 8192) -> Clip:
    """One-frame clip of an image: uint8 (1, C, h, w) at `size`, `num_frames` 1."""
    frames = resize_center_crop(read_image(source, name, max_frame_side), size, resize)
    return Clip(frames=frames.contiguous(), num_frames=1)


def still_shape(buckets: Sequence[Bucket] | None, video_size: tuple[int, int], height: int, width: int) -> Bucket:
    """The (1, h, w) shape a still of `height` x `width` trains at: the video size without
    buckets; with buckets, the bucket size (any frame count) that crops it least (ties: the
    largest that does not upscale), as a video picks its bucket."""
    if not buckets:
        return (1, *video_size)
    sizes = list(dict.fromkeys((1, h, w) for _, h, w in buckets))
    _, h, w = sizes[choose_bucket(sizes, 1, height, width)]
    return (1, h, w)

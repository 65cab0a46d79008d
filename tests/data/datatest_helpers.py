"""Helpers shared by the data tests (a module, not conftest, so `import` is unambiguous)."""

from __future__ import annotations

import numpy as np

H, W = 32, 40  # tiny clip size; not 32x48: decord 0.6 returns 4-channel frames for some tiny widths


def gray_levels(num_frames: int) -> np.ndarray:
    """Frame t of a coded clip is flat gray at this level, so its index can be read back."""
    return 20 + 5 * np.arange(num_frames)


def coded_frames(num_frames: int, height: int = H, width: int = W) -> np.ndarray:
    levels = gray_levels(num_frames).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


def decoded_indices(mp4) -> list[int]:
    """Source frame index of each frame of a [-1, 1] (T, C, H, W) clip made from coded frames."""
    levels = mp4.float().mul(127.5).add(127.5).mean(dim=(1, 2, 3)).numpy()
    return [int(round((v - 20) / 5)) for v in levels]


def write_shard(path, samples: dict[str, dict[str, bytes]]) -> None:
    """A tar shard with members `<key>.<ext>` (in the order given)."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

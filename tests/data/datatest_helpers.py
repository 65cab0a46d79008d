"""Helpers shared by the data tests (a module, not conftest, so `import` is unambiguous)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from cogvideox_sat.data import CacheEncoders

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


class TinyEncoders:
    """Deterministic stand-ins: 'VAE' = temporal stride 4 + 8x8 average pool, 'T5' = byte codes."""

    def __init__(self, fingerprint: str = "tiny-v1", fail_after: int | None = None, kind: str = "latent") -> None:
        self.video_calls = 0
        self.fail_after = fail_after
        self.kind = kind
        self.fingerprint = fingerprint

    def video(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C, H, W) -> (B, C', T', H', W')
        if self.fail_after is not None and self.video_calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.video_calls += 1
        x = x.permute(0, 2, 1, 3, 4)[:, :, ::4]
        b, c, t, h, w = x.shape
        z = F.avg_pool2d(x.reshape(b, c * t, h, w), 8).reshape(b, c, t, h // 8, w // 8)
        if self.kind == "moments":
            return torch.cat([z, torch.full_like(z, -2.0)], dim=1)  # mean, logvar
        return z

    @staticmethod
    def text(captions: list[str]) -> torch.Tensor:
        codes = [list(hashlib.sha256(c.encode()).digest()[:8]) for c in captions]
        return torch.tensor(codes, dtype=torch.float32)[:, :, None].expand(-1, -1, 4) / 255

    def encoders(self) -> CacheEncoders:
        return CacheEncoders(self.video, self.text, self.fingerprint, self.kind)

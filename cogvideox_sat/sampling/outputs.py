"""Where samples go, with the official names: `<output_dir>/<line>_<prompt>/<sample>/000000.mp4`
(prompt with spaces as underscores, slashes removed, at most 120 characters), plus a PNG contact
sheet beside each video, or `latent.pt` and `text.txt` when only latents are kept."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cogvideox_sat.media import contact_sheet, save_mp4

VIDEO_NAME = "000000"
MAX_NAME = 120


def sample_folder(output_dir: str | os.PathLike, prompt_index: int, text: str, sample_index: int) -> Path:
    name = text.replace(" ", "_").replace("/", "")[:MAX_NAME]
    return Path(output_dir) / f"{prompt_index}_{name}" / str(sample_index)


def write_video(video: torch.Tensor, folder: Path, fps: int, text: str, mp4: bool = True) -> list[Path]:
    """A (T, 3, H, W) video in [-1, 1] as mp4 (unless `mp4` is False) + PNG contact sheet (+ the
    full prompt); returns the files written, the mp4 first."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text.txt").write_text(text, encoding="utf-8")
    videos = [save_mp4(video, folder / f"{VIDEO_NAME}.mp4", fps)] if mp4 else []
    return videos + [contact_sheet(video, folder / f"{VIDEO_NAME}.png")]


def write_latents(latents: torch.Tensor, folder: Path, text: str) -> list[Path]:
    """Unscaled VAE latents [1, c, t, h, w] (as officially saved) and the prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "latent.pt"
    torch.save(latents.detach().cpu(), path)
    (folder / "text.txt").write_text(text, encoding="utf-8")
    return [path, folder / "text.txt"]

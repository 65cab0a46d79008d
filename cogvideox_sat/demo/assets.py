"""The demo's world: which clips each stage trains on, and the assets made from them offline.

Six clips, each with its own background colour, shape, colour and motion, so a thumbnail tells
any two apart. The base fine-tune learns the first four (`BASE_CLIPS`); the LoRA stage learns
two the base never saw (`LORA_CLIPS`). `make_demo_assets` writes, with no network:

    OUT/t5/                  a tiny T5 encoder + tokenizer trained on the spot
    OUT/data/, OUT/data_lora/  the two stages' clips in the official SFT layout (videos/ + labels/)
    OUT/vae/3d-vae.pt        the tiny VAE fitted to all six clips (released file format)
    OUT/prompts.txt          every caption, base clips first: what the demo samples
    OUT/paths.yaml           an extra --base file: the VAE weights and its latent scale factor
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cogvideox_sat.demo.clips import ClipRecipe, render_frames, write_sft_folder
from cogvideox_sat.demo.tiny_t5 import make_tiny_t5
from cogvideox_sat.demo.vae_fit import VaeFitReport, fit_vae
from cogvideox_sat.registry import instantiate_from_config

BASE_CLIPS = (
    ClipRecipe("square", "red", "right", "blue"),
    ClipRecipe("circle", "yellow", "down", "green"),
    ClipRecipe("bar", "white", "left", "red"),
    ClipRecipe("circle", "blue", "up", "yellow"),
)
LORA_CLIPS = (
    ClipRecipe("square", "green", "diagonally", "purple"),
    ClipRecipe("bar", "purple", "right", "white"),
)
FRAMES, HEIGHT, WIDTH, FPS = 9, 64, 96, 8
DEMO_MODEL = Path(__file__).resolve().parents[2] / "configs" / "demo" / "tiny_t2v.yaml"


def clip_tensor(recipes: tuple[ClipRecipe, ...]) -> torch.Tensor:
    """The clips as the VAE sees them: (N, 3, FRAMES, HEIGHT, WIDTH) in [-1, 1]."""
    frames = np.stack([render_frames(r, FRAMES, HEIGHT, WIDTH) for r in recipes])  # (N, T, H, W, 3) uint8
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def make_demo_vae(out: Path, vae_steps: int, seed: int = 0) -> VaeFitReport:
    """Fit the demo model's VAE to all demo clips and save it like the released `3d-vae.pt`."""
    cfg: dict[str, Any] = yaml.safe_load(DEMO_MODEL.read_text())["model"]["first_stage_config"]
    torch.manual_seed(seed)
    vae = instantiate_from_config(cfg)
    report = fit_vae(vae, clip_tensor(BASE_CLIPS + LORA_CLIPS), steps=vae_steps, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": vae.state_dict()}, out)
    return report


def make_demo_assets(out: str | Path, vae_steps: int = 430) -> dict[str, Any]:
    """Write every demo asset under `out` (see the module docstring); returns a summary."""
    out = Path(out)
    start = time.perf_counter()
    t5 = make_tiny_t5(out / "t5", d_model=32)
    print(f"tiny T5 encoder + tokenizer: {t5}", flush=True)
    stages = {"data": BASE_CLIPS, "data_lora": LORA_CLIPS}
    for folder, recipes in stages.items():
        write_sft_folder(out / folder, recipes, FRAMES, HEIGHT, WIDTH, FPS)
        print(f"{len(recipes)} captioned clips: {out / folder} (videos/ + labels/)", flush=True)
    (out / "prompts.txt").write_text("".join(r.caption + "\n" for r in BASE_CLIPS + LORA_CLIPS))
    print(f"fitting the demo VAE to the {len(BASE_CLIPS) + len(LORA_CLIPS)} clips ({vae_steps} steps)", flush=True)
    vae_path = out / "vae" / "3d-vae.pt"
    report = make_demo_vae(vae_path, vae_steps)
    # The DiT trains on latents * scale_factor: unit variance, as the released VAEs' factors give.
    scale = round(1.0 / report.latent_std, 6)
    paths = {"model": {"scale_factor": scale, "first_stage_config": {"params": {"ckpt_path": str(vae_path)}}}}
    (out / "paths.yaml").write_text(yaml.safe_dump(paths))
    psnrs = ", ".join(f"{p:.1f}" for p in report.psnr_db)
    print(f"demo VAE: {vae_path}, reconstruction PSNR {report.mean_psnr_db:.1f} dB (per clip {psnrs}), "
          f"latent std {report.latent_std:.3f} -> scale_factor {scale} ({report.seconds:.0f} s)", flush=True)
    (out / ".complete").write_text(f"{time.perf_counter() - start:.0f} s\n")
    return {"vae_psnr_db": report.psnr_db, "scale_factor": scale}

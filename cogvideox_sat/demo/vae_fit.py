"""Fit the demo's tiny CogVideoX VAE to the demo clips, on a CPU, in about two minutes.

A random VAE decodes any latent to noise, so a demo with one cannot show that training learns.
This trains the real `VideoAutoencoderInferenceWrapper` (the same encoder/decoder classes as the
released VAE, at a tiny width) to reconstruct the clips it will see, then reports its PSNR.

Why it is fast enough on two cores:
- random 8-pixel-aligned crops of `crop` pixels;
- images first: the first `image_fraction` of the steps fit single frames (any frame of a clip,
  coded as a causal clip's first frame, ~3x cheaper than a 5-frame window), which teaches the
  spatial path and the latent's colours and shapes; the rest fit `crop_frames`-frame windows
  (1 + 4k, starting at a frame that is a multiple of 4, so every window is a valid causal-VAE clip
  of its own) for the temporal path. On a 2-core AVX2 CPU this reached ~18 dB in 140 s where
  700 video-only steps needed ~700 s for ~19 dB;
- bfloat16 autocast when the CPU has native bf16 (AVX512-BF16 / AMX: ~3x on these convolutions),
  float32 otherwise (emulated bf16 convolutions are ~10x slower than float32);
- a one-cycle learning-rate schedule over all steps (a short warm-up, then cosine decay),
  mean-squared error on the posterior mean (the demo configs encode the mean:
  `regularizer_config.params.sample: false`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class VaeFitReport:
    steps: int
    seconds: float
    psnr_db: list[float]  # per clip, on whole clips (not crops)
    latent_std: float  # std of the posterior means over all clips: the scale factor is 1 / this

    @property
    def mean_psnr_db(self) -> float:
        return sum(self.psnr_db) / len(self.psnr_db)


def native_bf16_cpu() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (else bf16 autocast is slower than fp32)."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and probe is not None and probe())


def reconstruct(vae: nn.Module, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, posterior mean) of clips (B, 3, 1 + 4k, H, W) in [-1, 1]."""
    mean = vae.encode_distribution(clips).mean
    frames, _ = vae.decode_chunk(mean, first_frame_separate=True, keep_state=False)
    return frames, mean


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR per item of two batches in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float().clamp(-1, 1) - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def _window(clips: torch.Tensor, batch: int, crop: tuple[int, int], frames: int, g: torch.Generator) -> torch.Tensor:
    """A random batch of crops; `frames` 1 takes any frame, else a window starting at a multiple of 4."""
    n, _, t, h, w = clips.shape
    pick = torch.randperm(n, generator=g)[:batch]
    y = int(torch.randint(0, (h - crop[0]) // 8 + 1, (1,), generator=g)) * 8
    x = int(torch.randint(0, (w - crop[1]) // 8 + 1, (1,), generator=g)) * 8
    t0 = int(torch.randint(0, t, (1,), generator=g)) if frames == 1 else int(torch.randint(0, (t - frames) // 4 + 1, (1,), generator=g)) * 4
    return clips[pick, :, t0 : t0 + frames, y : y + crop[0], x : x + crop[1]]


def fit_vae(
    vae: nn.Module,
    clips: torch.Tensor,
    steps: int = 430,
    image_fraction: float = 0.7,
    lr: float = 2e-3,
    batch: int = 4,
    crop: tuple[int, int] = (32, 48),
    crop_frames: int = 5,
    seed: int = 0,
    log_every: int = 50,
) -> VaeFitReport:
    """Train `vae` in place on clips (N, 3, 1 + 4k, H, W) in [-1, 1]; returns the fit report."""
    if (crop_frames - 1) % 4 or crop_frames > clips.shape[2]:
        raise ValueError(f"crop_frames must be 1 + 4k and at most the clip length {clips.shape[2]}, got {crop_frames}")
    if not 0 <= image_fraction <= 1:
        raise ValueError(f"image_fraction must be in [0, 1], got {image_fraction}")
    image_steps = round(steps * image_fraction)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )
    bf16 = native_bf16_cpu() and clips.device.type == "cpu"
    vae.train()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x = _window(clips, min(batch, len(clips)), crop, 1 if step <= image_steps else crop_frames, g)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out, _ = reconstruct(vae, x)
        loss = (out.float() - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == steps):
            kind = "image" if step <= image_steps else f"{crop_frames}-frame"
            print(f"  VAE step {step}/{steps} ({kind} crops): PSNR {10 * math.log10(4.0 / max(loss.item(), 1e-12)):.1f} dB "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    vae.eval()
    with torch.no_grad():
        out, mean = reconstruct(vae, clips)
    return VaeFitReport(steps, time.perf_counter() - start, psnr_db(out, clips).tolist(), float(mean.std()))

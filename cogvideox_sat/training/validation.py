"""Validation during training: loss on held-out batches and sample videos saved and logged."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cogvideox_sat.media import contact_sheet, save_mp4
from cogvideox_sat.training.metrics import MetricsLogger


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def validation_loss(engine: Any, stream: Iterator[dict[str, Any]], iters: int, device: torch.device) -> float:
    losses = []
    for _ in range(iters):
        loss, _ = engine.shared_step(move_batch(next(stream), device))
        losses.append(float(loss))
    return sum(losses) / max(len(losses), 1)


@torch.no_grad()
def save_validation_samples(
    engine: Any,
    batch: dict[str, Any],
    args: argparse.Namespace,
    run_dir: Path,
    iteration: int,
    logger: MetricsLogger,
    write: bool = True,
) -> list[Path]:
    """Sample videos for the batch's prompts; mp4 + PNG contact sheet per video (or latents)."""
    out_dir = run_dir / "samples" / f"iter_{iteration:06d}"
    logs = engine.log_video(batch, only_log_video_latents=args.only_log_video_latents)
    if not write:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prompts.txt").write_text("\n".join(batch.get("txt", [])) + "\n")
    if args.only_log_video_latents:
        path = out_dir / "latents.pt"
        torch.save(logs["latents"].cpu(), path)
        return [path]
    fps = int(batch["fps"][0]) if "fps" in batch else args.sampling_fps
    written, videos, sheets = [], {}, {}
    for key in ("samples", "reconstructions", "inputs"):
        if key not in logs:
            continue
        for i, video in enumerate(logs[key]):  # (B, T, C, H, W) in [-1, 1]
            name = f"{key}_{i:02d}"
            videos[name] = str(save_mp4(video, out_dir / f"{name}.mp4", fps))
            sheets[name] = str(contact_sheet(video, out_dir / f"{name}.png"))
            written.append(Path(videos[name]))
    logger.log_media(iteration, videos, sheets)
    return written

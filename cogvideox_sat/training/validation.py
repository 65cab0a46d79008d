"""Validation during training: loss on held-out batches, and sample videos on every GPU.

Sampling is split across data-parallel ranks: each rank samples the prompts of its own
validation batch (its shard of valid_data, `eval_batch_size` prompts), with the training engine
itself (no second copy of the weights). Global rank 0 gathers the videos (uint8) and writes
them, with what made each one (`sample.json`, see sampling/reproduce.py), to
`<run>/samples/iter_<n>/<i>_<prompt>/0/`, and logs them to TensorBoard/wandb. The ranks of one
model-parallel group share a batch and sample together; their first rank reports.

A sample is drawn exactly as sample_video.py draws it (sampling/generate.py): prompt `i` of the
iteration (ID token in front unless it has it) gets seed `args.seed + i`, the same every
iteration, so progress is compared on the same noise and sample_video.py reproduces it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from cogvideox_sat import distributed
from cogvideox_sat.id_token import CAPTION_KEY, caption_batch, prompt_with_id_token
from cogvideox_sat.media import to_uint8_frames
from cogvideox_sat.training.metrics import MetricsLogger


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def validation_loss(engine: Any, stream: Iterator[dict[str, Any]], iters: int, device: torch.device, id_token: Optional[str] = None) -> float:
    losses = []
    for _ in range(iters):
        loss, _ = engine.shared_step(caption_batch(move_batch(next(stream), device), id_token))
        losses.append(float(loss))
    return sum(losses) / max(len(losses), 1)


@dataclass
class ValidationSample:
    """One sample as its rank hands it to rank 0: uint8 frames (or latents) and its record."""

    index: int
    prompt: str
    record: dict[str, Any]
    video: Optional[np.ndarray] = None  # (T, H, W, 3) uint8
    latents: Optional[torch.Tensor] = None  # [1, c, t, h, w], unscaled (only_log_video_latents)
    image: Optional[np.ndarray] = None  # (H, W, 3) uint8 first frame (image-to-video)
    clip: Optional[np.ndarray] = None  # (T, H, W, 3) uint8 validation clip (pixel batches)


def _uint8(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, the exact inverse of data.transforms.to_unit_range."""
    return (pixels.float() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)


def clip_geometry(engine: Any, clips: torch.Tensor) -> tuple[list[int], int]:
    """([height, width], latent frames to sample) of a validation batch's clips: pixels
    [b, T, 3, H, W], or cached latents [b, c, t, h, w] with model.latent_input (the layout
    encode_first_stage takes them in); padded as training pads."""
    from cogvideox_sat.vae.first_stage import spatial_scale
    from cogvideox_sat.vae.time_split import latent_frames

    if engine.latent_input:
        scale = spatial_scale(engine.first_stage_model)
        t, size = clips.shape[2], [clips.shape[3] * scale, clips.shape[4] * scale]
    else:
        t, size = latent_frames(clips.shape[1]), [clips.shape[3], clips.shape[4]]
    return size, engine.pad_latents(torch.zeros(1, t, 1, 1, 1)).shape[1]


def first_frames(engine: Any, batch: dict[str, Any]) -> torch.Tensor:
    """uint8 [b, 3, H, W] condition frames of an image-to-video batch (frame 0 of each clip)."""
    frames = batch["first_frame"] if engine.latent_input else batch[engine.input_key][:, 0]
    return _uint8(frames.reshape(frames.shape[0], 3, *frames.shape[-2:]).cpu())


@torch.no_grad()
def sample_share(engine: Any, batch: dict[str, Any], args: argparse.Namespace, run_dir: Path, iteration: int, first_index: int) -> list[ValidationSample]:
    """This rank's validation samples: one per prompt of `batch`, numbered from `first_index`."""
    from cogvideox_sat.sampling.decoding import decode_samples, num_video_frames
    from cogvideox_sat.sampling.generate import draw_latents, prompt_inputs
    from cogvideox_sat.sampling.images import condition_image
    from cogvideox_sat.sampling.main import latent_shape
    from cogvideox_sat.sampling.reproduce import validation_record

    clips = batch[engine.input_key]
    size, frames = clip_geometry(engine, clips)
    shape = latent_shape(engine, argparse.Namespace(sampling_image_size=size, sampling_num_frames=frames))
    images = first_frames(engine, batch) if engine.noised_image_input else None
    fps = int(batch["fps"][0]) if "fps" in batch else args.sampling_fps
    official = bool(getattr(args, "official_decode", False))
    samples = []
    for j, caption in enumerate(batch[CAPTION_KEY]):
        index = first_index + j
        prompt = prompt_with_id_token(" ".join(caption.split("\n")).strip(), args.id_token)  # one line, as prompt files hold it
        seed = args.seed + index
        image = None if images is None else condition_image(images[j], size)
        # 1. conditions and latents exactly as sample_video.py draws them
        c, uc = prompt_inputs(engine, prompt, image, shape[0], seed)
        z = draw_latents(engine, c, uc, seed, shape)
        record = validation_record(
            engine, args, run_dir, iteration, prompt=prompt, caption=caption, seed=seed, image_size=size,
            latent_frames=frames, frames=num_video_frames(frames, engine.temporal_patch_size, official), fps=fps,
            image=images is not None,
        )
        record["rank"] = distributed.world_rank()  # which process drew it (any rank draws the same video)
        sample = ValidationSample(index, prompt, record)
        if images is not None:
            sample.image = images[j].permute(1, 2, 0).numpy()
        if not engine.latent_input:
            sample.clip = to_uint8_frames(clips[j].float())
        # 2. latents only, or frames decoded as sample_video.py decodes them
        if args.only_log_video_latents:
            sample.latents = (z.permute(0, 2, 1, 3, 4) / engine.scale_factor).cpu()
        else:
            video = decode_samples(engine, z, official=official, chunk_frames=getattr(args, "decode_chunk_frames", None))[0]
            sample.video = to_uint8_frames(video)
        samples.append(sample)
    return samples


def write_samples(samples: list[ValidationSample], out_dir: Path, iteration: int, logger: MetricsLogger) -> list[Path]:
    """Rank 0: every rank's samples to `out_dir` (sample_video.py's layout) and to the logger."""
    import imageio.v3 as iio

    from cogvideox_sat.data.transforms import to_unit_range
    from cogvideox_sat.media import contact_sheet, mp4_writer_available, save_mp4
    from cogvideox_sat.sampling.outputs import sample_folder, write_latents, write_video
    from cogvideox_sat.sampling.reproduce import write_record

    out_dir.mkdir(parents=True, exist_ok=True)
    samples = sorted(samples, key=lambda s: s.index)
    (out_dir / "prompts.txt").write_text("".join(f"{s.prompt}\n" for s in samples), encoding="utf-8")
    written, videos, sheets = [], {}, {}
    mp4 = mp4_writer_available()  # without it: PNG contact sheets only (warned at the start of training)
    for s in samples:
        folder = sample_folder(out_dir, s.index, s.prompt, 0)
        name = f"sample_{s.index:02d}"
        if s.latents is not None:
            written += write_latents(s.latents, folder, s.prompt)
        else:
            video = to_unit_range(torch.from_numpy(s.video).permute(0, 3, 1, 2))  # the same uint8 frames back
            *mp4s, sheet = write_video(video, folder, s.record["fps"], s.prompt, mp4=mp4)
            videos.update({name: str(p) for p in mp4s})
            sheets[name] = str(sheet)
            written += mp4s
        if s.image is not None:
            iio.imwrite(folder / s.record["image"], s.image)
        if s.clip is not None:
            clip = to_unit_range(torch.from_numpy(s.clip).permute(0, 3, 1, 2))
            if mp4:
                videos[f"input_{s.index:02d}"] = str(save_mp4(clip, folder / "input.mp4", s.record["fps"]))
            sheets[f"input_{s.index:02d}"] = str(contact_sheet(clip, folder / "input.png"))
        written.append(write_record(folder, s.record))
    logger.log_media(iteration, videos, sheets)
    return written


@torch.no_grad()
def save_validation_samples(
    engine: Any, batch: dict[str, Any], args: argparse.Namespace, run_dir: Path, iteration: int, logger: MetricsLogger
) -> list[Path]:
    """Collective: every rank samples its batch's prompts, rank 0 writes and logs them all.
    Returns the files written (on rank 0; empty elsewhere)."""
    count = len(batch[CAPTION_KEY])
    first_index = distributed.get_data_parallel_rank() * count  # the same eval batch size on every rank
    samples = sample_share(engine, batch, args, run_dir, iteration, first_index)
    reports = distributed.get_model_parallel_rank() == 0  # a model-parallel group sampled these together
    gathered = distributed.gather_to_first(samples if reports else [])
    if gathered is None:
        return []
    return write_samples([s for share in gathered for s in share], run_dir / "samples" / f"iter_{iteration:06d}", iteration, logger)

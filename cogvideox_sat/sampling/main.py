"""`sample(args)`: text-to-video and image-to-video generation (what sample_video.py runs).

For each prompt of this rank (file or stdin, `prompt@@image_path` for image-to-video) and each
of `batch_size` samples: condition on the text (and image), sample latents with the config's
sampler, guider and step count, decode them in temporal chunks and write one mp4 + a PNG
contact sheet (or only the latents). Sample `s` of prompt line `i` is drawn with seed
`seed + i * batch_size + s` (generate.py, shared with validation during training), so a video
does not depend on which rank drew it or on what was sampled before it. Prompts get the run's
ID token (id_token.py) unless they contain it.

Under torchrun the ranks of one model-parallel group sample the same prompts; with
`args.sequence_parallel` they share each sample's DiT work (Ulysses, see placement.py) and the
group's first rank decodes and writes.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cogvideox_sat.id_token import prompt_with_id_token, sampling_id_token
from cogvideox_sat.io.sat_checkpoint import ema_weights
from cogvideox_sat.media import MP4_NEEDS, mp4_writer_available
from cogvideox_sat.registry import allow_any_target
from cogvideox_sat.sampling.decoding import decode_samples
from cogvideox_sat.sampling.generate import draw_latents, prompt_inputs, sample_seed
from cogvideox_sat.sampling.images import load_condition_image
from cogvideox_sat.sampling.outputs import sample_folder, write_latents, write_video
from cogvideox_sat.sampling.placement import BroadcastChannel, SamplingPlacement, enable_sequence_parallel, place
from cogvideox_sat.sampling.prompts import Prompt, read_prompt_file, read_stdin
from cogvideox_sat.sampling.weights import load_sampling_weights, merge_lora_weights
from cogvideox_sat.training.rng import seed_everything

# Set for sampling whatever the config says, as the official sample_video.py does: one-GPU
# VAE decoding, no tensor parallelism, no activation checkpointing, no uniform timestep groups.
# (args.model_parallel_size still sizes the groups of ranks sharing prompts, and with
# args.sequence_parallel the Ulysses degree; it is not the network's tensor parallelism.)
INFERENCE_OVERRIDES: dict[str, Any] = {
    "first_stage_config.params.cp_size": 1,
    "network_config.params.transformer_args.model_parallel_size": 1,
    "network_config.params.transformer_args.checkpoint_activations": False,
    "loss_fn_config.params.sigma_sampler_config.params.uniform_sampling": False,
}


def sampling_model_config(model_config: Any) -> DictConfig:
    """A copy of the `model:` section with INFERENCE_OVERRIDES applied where the keys exist."""
    cfg = OmegaConf.create(copy.deepcopy(OmegaConf.to_container(OmegaConf.create(model_config), resolve=True)))
    for key, value in INFERENCE_OVERRIDES.items():
        parent = key.rpartition(".")[0]
        if OmegaConf.select(cfg, parent) is not None:
            OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def build_sampling_engine(args: argparse.Namespace, device: torch.device, verbose: bool = True) -> Any:
    """The engine with its weights loaded (LoRA merged on request), in the run's precision, on
    `device`, in eval mode."""
    from cogvideox_sat.engine import SATVideoDiffusionEngine

    ns = argparse.Namespace(model_config=sampling_model_config(args.model_config), fp16=args.fp16, bf16=args.bf16, device=device)
    with allow_any_target(getattr(args, "allow_any_target", False)):
        engine = SATVideoDiffusionEngine(ns)
    check_task(engine, args.image2video)
    # 1. weights (float32 on the CPU, so a LoRA merge is exact before the cast)
    load, lora_load = ema_weights(args.load, getattr(args, "lora_load", None), getattr(args, "ema", False), verbose)
    reports = load_sampling_weights(engine, load, lora_load, lenient=args.force_inference)
    for report in reports:
        if verbose or not report.ok:
            print(("" if report.ok else "WARNING: checkpoint does not match the model\n") + report.summary(), flush=True)
    if getattr(args, "lora_merge", False):
        merged = merge_lora_weights(engine)
        if verbose:
            print(f"merged LoRA adapters into {merged} layers", flush=True)
    # 2. precision and device; the sampler's progress bar only on the first rank
    engine = engine.to(device=device, dtype=engine.dtype).eval().requires_grad_(False)
    if engine.sampler is None:
        raise ValueError("model.sampler_config is missing: sampling needs a sampler (e.g. VPSDEDPMPP2MSampler)")
    engine.sampler.verbose = bool(getattr(engine.sampler, "verbose", False)) and verbose
    return engine


def check_task(engine: Any, image2video: bool) -> None:
    """Image-to-video models need an image per prompt and text-to-video models cannot take one."""
    if engine.noised_image_input and not image2video:
        raise ValueError(
            "this is an image-to-video model (model.noised_image_input): set args.image2video: true and "
            "write prompts as 'prompt@@image_path'"
        )
    if image2video and not engine.noised_image_input:
        raise ValueError("args.image2video is set but the model is text-to-video (no model.noised_image_input)")


def latent_shape(engine: Any, args: argparse.Namespace) -> tuple[int, int, int, int]:
    """(t, c, h, w) of the latents to sample: sampling_num_frames latent frames of the model's
    output channels (the official code reads args.latent_channels, which must equal them)."""
    from cogvideox_sat.vae.first_stage import spatial_scale

    scale = spatial_scale(engine.first_stage_model)
    height, width = (int(v) for v in args.sampling_image_size)
    if height % scale or width % scale:
        raise ValueError(f"sampling_image_size {[height, width]} must be multiples of {scale}")
    return args.sampling_num_frames, engine.diffusion_model.out_channels, height // scale, width // scale


def prompt_source(args: argparse.Namespace, placement: SamplingPlacement) -> Iterable[Prompt]:
    """This rank's prompts. From a file they are read up front (a progress total, and missing
    images are reported before any model is built)."""
    if args.input_type == "cli":
        channel = BroadcastChannel() if placement.distributed else None
        return read_stdin(args.image2video, placement.dp_rank, placement.dp_world_size, channel=channel)
    if args.input_type != "txt":
        raise ValueError(f"input_type '{args.input_type}': use txt (input_file) or cli (stdin)")
    prompts = list(read_prompt_file(args.input_file, args.image2video, placement.dp_rank, placement.dp_world_size))
    missing = [f"line {p.index + 1}: {p.image_path}" for p in prompts if p.image_path and not Path(p.image_path).is_file()]
    if missing:
        raise FileNotFoundError(f"image-to-video: {len(missing)} image(s) of {args.input_file} do not exist: " + "; ".join(missing))
    return prompts


def prompts_with_id_token(prompts: Iterable[Prompt], args: argparse.Namespace, announce: bool = False) -> Iterable[Prompt]:
    """`prompts` with the run's ID token (`sampling_id_token`) in front of those that lack it; a
    list stays a list (a file's prompts keep their count), stdin's stream stays a stream."""
    token = sampling_id_token(args)
    if token is None:
        return prompts
    if announce:
        print(f"ID token {token!r} goes in front of prompts that lack it", flush=True)
    tokened = (dataclasses.replace(p, text=prompt_with_id_token(p.text, token)) for p in prompts)
    return list(tokened) if isinstance(prompts, list) else tokened


def step_cache_note(engine: Any) -> str:
    """', step cache: skipped K/N steps ... change per step ...' of the last sample where the
    sampler's step cache is on: the changes are what a threshold is chosen from."""
    cache = getattr(engine.sampler, "last_step_cache", None)
    return f", step cache: {cache.summary()}" if cache is not None else ""


@torch.no_grad()
def sample_prompt(
    engine: Any, prompt: Prompt, args: argparse.Namespace, placement: SamplingPlacement, shape: tuple[int, int, int, int]
) -> list[Path]:
    """All `batch_size` samples of one prompt; returns the files written."""
    # 1. conditions (text; image latent for image-to-video), drawn under the prompt's first seed
    image = None if prompt.image_path is None else load_condition_image(prompt.image_path, args.sampling_image_size)
    c, uc = prompt_inputs(engine, prompt.text, image, shape[0], sample_seed(args.seed, prompt.index, 0, args.batch_size))
    written: list[Path] = []
    for index in range(args.batch_size):
        # 2. latents [1, t, c, h, w] from noise
        start = time.perf_counter()
        z = draw_latents(engine, c, uc, sample_seed(args.seed, prompt.index, index, args.batch_size), shape)
        sampled = time.perf_counter() - start
        if not placement.writes:
            continue
        folder = sample_folder(args.output_dir, prompt.index, prompt.text, index)
        # 3. latents only, or decoded frames as mp4 + contact sheet
        if args.only_save_latents:
            written += write_latents(z.permute(0, 2, 1, 3, 4) / engine.scale_factor, folder, prompt.text)
            print(f"prompt {prompt.index} sample {index}: {sampled:.1f} s sampling{step_cache_note(engine)} -> {folder}", flush=True)
            continue
        start = time.perf_counter()
        video = decode_samples(
            engine, z, official=getattr(args, "official_decode", False), chunk_frames=getattr(args, "decode_chunk_frames", None)
        )[0]
        decoded = time.perf_counter() - start
        written += write_video(video, folder, args.sampling_fps, prompt.text)
        print(f"prompt {prompt.index} sample {index}: {sampled:.1f} s sampling{step_cache_note(engine)}, {decoded:.1f} s decoding -> {folder}",
              flush=True)
    return written


def sample(args: argparse.Namespace) -> list[Path]:
    """Generate the videos of every prompt of this rank; returns the files it wrote."""
    if not args.only_log_video_latents and not mp4_writer_available():  # before the weights load
        raise SystemExit(f"sample_video.py: {MP4_NEEDS}; or set only_log_video_latents: true to keep latents only")
    placement = place(args)
    prompts = prompts_with_id_token(prompt_source(args, placement), args, announce=placement.is_main)
    seed_everything(args.seed)  # what the config leaves random (a demo VAE, fresh adapters) is reproducible
    engine = build_sampling_engine(args, placement.device, verbose=placement.is_main)
    if getattr(args, "sequence_parallel", False):
        enable_sequence_parallel(engine, placement)
    shape = latent_shape(engine, args)
    written: list[Path] = []
    progress = tqdm(prompts, desc="prompts", unit="prompt", disable=not placement.is_main or args.input_type == "cli")
    for prompt in progress:
        written += sample_prompt(engine, prompt, args, placement, shape)
    return written

"""Ulysses scaling benchmark: DiT forward + backward of one clip split over 1, 2, 4... GPUs.

For every degree d the world is cut into groups of d consecutive ranks; all groups run the same
clip at once (every GPU busy, as in training with data x sequence parallelism), random weights,
no optimizer. Prints per degree: tokens per GPU, seconds per step (slowest rank), peak memory
per GPU, model TFLOP/s per GPU, and the efficiency t_1 / (d t_d) against the smallest degree that
ran (a degree that runs out of memory prints OOM).

    torchrun --nproc_per_node=4 benchmarks/ulysses.py configs/cogvideox1.5_5b.yaml \
        --frames 81 --height 768 --width 1360 --degrees 1 2 4 --checkpoint full
    torchrun --nproc_per_node=2 benchmarks/ulysses.py configs/cogvideox_2b.yaml --tiny   # CPU, gloo
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
from typing import Any

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import max_over_ranks, peak_gib, reset_peak_memory, synchronize  # noqa: E402

from cogvideox_sat.dtypes import DTYPES  # noqa: E402
from cogvideox_sat.models.lora import mark_only_lora_trainable  # noqa: E402
from cogvideox_sat.models.tiny import shrink_config  # noqa: E402
from cogvideox_sat.registry import instantiate_from_config  # noqa: E402


def network_config(paths: list[str], frames: int, height: int, width: int, lora_rank: int, tiny: bool) -> dict[str, Any]:
    """The configs' network_config, its position tables sized for the clip, optionally LoRA or tiny."""
    cfg = OmegaConf.to_container(OmegaConf.merge(*[OmegaConf.load(p) for p in paths]).model.network_config, resolve=True)
    cfg = copy.deepcopy(cfg)
    p, mods = cfg["params"], cfg["params"]["modules"]
    p.update(num_frames=frames, latent_height=height // 8, latent_width=width // 8)
    mods.pop("lora_config", None)
    if lora_rank:
        mods["lora_config"] = {"target": "cogvideox_sat.models.LoraMixin", "params": {"r": lora_rank, "lora_alpha": lora_rank}}
    return shrink_config(cfg, heads=4) if tiny else cfg


def make_inputs(model: torch.nn.Module, frames: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One clip's random latents and text (identical on every rank: the same seed everywhere)."""
    pt, ph, pw = model.patch_size
    t = math.ceil(((frames - 1) // 4 + 1) / pt) * pt
    gen = torch.Generator(device=device).manual_seed(0)
    text = model.mixins["pos_embed"].text_length
    text_hidden = model.mixins["patch_embed"].text_proj.in_features
    kwargs = {
        "x": torch.randn(1, t, model.out_channels, height // 8, width // 8, device=device, dtype=dtype, generator=gen),
        "timesteps": torch.tensor([500.0], device=device),
        "context": torch.randn(1, text, text_hidden, device=device, dtype=dtype, generator=gen),
    }
    if model.in_channels != model.out_channels:
        kwargs["concat_images"] = torch.randn(1, t, model.in_channels - model.out_channels, height // 8, width // 8, device=device, dtype=dtype, generator=gen)
    if model.ofs_embed_dim is not None:
        kwargs["ofs"] = torch.full((1,), 2.0, device=device)
    return kwargs


def model_flops(model: torch.nn.Module, tokens: int, lora: bool) -> float:
    """Forward + backward matmul and attention FLOPs of one step (no recomputation counted)."""
    h, layers = model.hidden_size, model.num_layers
    matmul, attn = 2 * tokens * 12 * h * h * layers, 4 * tokens * tokens * h * layers
    return matmul * (2 if lora else 3) + attn * 3


def run_degree(model: torch.nn.Module, kwargs: dict[str, torch.Tensor], degree: int, device: torch.device, warmup: int, steps: int) -> tuple[float, float, float]:
    """(seconds per step, peak GiB, tokens per GPU) with groups of `degree` ranks; nan on OOM."""
    world, rank = dist.get_world_size(), dist.get_rank()
    mine = None
    for start in range(0, world, degree):
        group = dist.new_group(list(range(start, start + degree)))  # collective: all ranks create all groups
        if start <= rank < start + degree:
            mine = group
    model.set_sequence_parallel(mine if degree > 1 else None)
    seen: list[int] = []
    hook = model.transformer.layers[0].attention.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    failed = 0.0
    times: list[float] = []
    try:
        for i in range(warmup + steps):
            if i == warmup:
                reset_peak_memory(device)
            start = time.perf_counter()
            model(**kwargs).float().square().mean().backward()
            synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    except torch.OutOfMemoryError:
        failed = 1.0
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if max_over_ranks(failed, device):
        return float("nan"), float("nan"), float(seen[0] if seen else 0)
    return max_over_ranks(statistics.median(times), device), max_over_ranks(peak_gib(device), device), float(seen[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="model YAML(s) with model.network_config")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--degrees", type=int, nargs="+", default=None, help="sequence-parallel degrees (default: 1, 2, 4 ... up to the world)")
    parser.add_argument("--checkpoint", default="full", help="activation checkpointing: none, full, selective")
    parser.add_argument("--lora-rank", type=int, default=0, help="0: full fine-tune (all weights get gradients)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU (gloo), to check the script")
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available() and not args.tiny
    if args.tiny:
        args.frames, args.height, args.width, args.dtype, args.warmup, args.steps = 9, 64, 96, "fp32", 1, 2
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    world = dist.get_world_size()
    degrees = args.degrees or [d for d in (1, 2, 4, 8, 16) if d <= world]
    if any(world % d for d in degrees):
        raise SystemExit(f"every degree must divide the world size {world}: {degrees}")

    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    with torch.device(device):
        model = instantiate_from_config(network_config(args.configs, args.frames, args.height, args.width, args.lora_rank, args.tiny))
    model.to(dtype).train()
    model.set_checkpoint_mode(args.checkpoint)
    if args.lora_rank:
        mark_only_lora_trainable(model)
    kwargs = make_inputs(model, args.frames, args.height, args.width, device, dtype)

    _, t, _, h, w = kwargs["x"].shape
    pt, ph, pw = model.patch_size
    total = kwargs["context"].shape[1] + (t // pt) * (h // ph) * (w // pw)
    rows, base = [], None
    for degree in degrees:
        seconds, peak, tokens = run_degree(model, kwargs, degree, device, args.warmup, args.steps)
        tflops = model_flops(model, total, bool(args.lora_rank)) / (degree * seconds) / 1e12 if seconds == seconds else float("nan")
        if base is None and seconds == seconds:
            base = (degree, seconds)
        efficiency = base[0] * base[1] / (degree * seconds) if base and seconds == seconds else float("nan")
        rows.append((degree, int(tokens), seconds, peak, tflops, efficiency))
    if dist.get_rank() == 0:
        print(f"{' '.join(args.configs)} {args.frames}x{args.height}x{args.width} {args.dtype} checkpoint={args.checkpoint} "
              f"{'LoRA r=' + str(args.lora_rank) if args.lora_rank else 'full'} heads={model.num_attention_heads} world={world} ({device.type})")
        print("| degree | tokens/GPU | s/step | peak GiB/GPU | TFLOP/s/GPU | efficiency |")
        print("|---|---|---|---|---|---|")
        for degree, tokens, seconds, peak, tflops, efficiency in rows:
            shown = "OOM" if seconds != seconds else f"{seconds:.3f}"
            print(f"| {degree} | {tokens} | {shown} | {peak:.1f} | {tflops:.1f} | {efficiency:.2f} |")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

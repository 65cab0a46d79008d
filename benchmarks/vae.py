"""VAE benchmark: encode / decode time and peak memory, ours beside diffusers' AutoencoderKLCogVideoX.

Both models get the released CogVideoX VAE architecture (ch 128, ch_mult [1, 2, 2, 4], 3 res
blocks, 16 latent channels) with random weights, the same clip, the same dtype, one model on
the device at a time. Rows:

- ours one-pass: `vae.encode(x)` (the official encode) / one decoder pass over all latents;
- ours chunked: encode 8 frames at a time, decode 2 latent frames at a time (diffusers'
  default batching), causal state streamed between chunks;
- ours decode_first_stage: the official engine's decode (drops latent 0, <= 10 chunks);
- diffusers: `encode(x).latent_dist.mode()` / `decode(z).sample` with its default batching.

    python benchmarks/vae.py                          # CUDA, bf16, 49x480x720 and 81x768x1360
    python benchmarks/vae.py --cases 49x480x720 --repeat 5
    python benchmarks/vae.py --tiny                   # CPU smoke run, tiny model and clips
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import peak_gib, reset_peak_memory, synchronize  # noqa: E402
from cogvideox_sat.dtypes import DTYPES  # noqa: E402
from cogvideox_sat.registry import instantiate_from_config  # noqa: E402
from cogvideox_sat.vae.chunking import decode_chunked, encode_chunked, even_chunk_sizes  # noqa: E402
from cogvideox_sat.vae.first_stage import decode_first_stage  # noqa: E402
from cogvideox_sat.vae.regularizer import DiagonalGaussianDistribution  # noqa: E402

RELEASED = {"ch": 128, "ch_mult": [1, 2, 2, 4], "num_res_blocks": 3, "z_channels": 16}
TINY = {"ch": 32, "ch_mult": [1, 2, 1, 1], "num_res_blocks": 1, "z_channels": 4}


@dataclass
class Row:
    model: str
    op: str
    case: str
    seconds: float | None
    peak_gib: float | None
    shape: str
    note: str = ""


def vae_config(arch: dict[str, Any]) -> dict[str, Any]:
    """The official first_stage_config layout (2B: decoder gather_norm False), random weights."""

    def coder(target: str, gather_norm: bool) -> dict[str, Any]:
        return {
            "target": target,
            "params": {
                "double_z": True,
                "resolution": 256,
                "in_channels": 3,
                "out_ch": 3,
                "attn_resolutions": [],
                "dropout": 0.0,
                "gather_norm": gather_norm,
                **arch,
            },
        }

    return {
        "target": "cogvideox_sat.vae.VideoAutoencoderInferenceWrapper",
        "params": {
            "cp_size": 1,
            "loss_config": {"target": "torch.nn.Identity"},
            "regularizer_config": {
                "target": "cogvideox_sat.vae.DiagonalGaussianRegularizer",
                "params": {"sample": False},
            },
            "encoder_config": coder("cogvideox_sat.vae.ContextParallelEncoder3D", True),
            "decoder_config": coder("cogvideox_sat.vae.ContextParallelDecoder3D", False),
        },
    }


def diffusers_vae(arch: dict[str, Any]) -> torch.nn.Module:
    from diffusers import AutoencoderKLCogVideoX

    levels = len(arch["ch_mult"])
    return AutoencoderKLCogVideoX(
        block_out_channels=tuple(arch["ch"] * m for m in arch["ch_mult"]),
        down_block_types=("CogVideoXDownBlock3D",) * levels,
        up_block_types=("CogVideoXUpBlock3D",) * levels,
        layers_per_block=arch["num_res_blocks"],
        latent_channels=arch["z_channels"],
    )


def latent_chunks(latent_frames: int) -> list[int]:
    """Two latent frames per chunk, the first chunk taking the odd one (diffusers' batching)."""
    first = 2 + latent_frames % 2 if latent_frames > 2 else latent_frames
    return even_chunk_sizes(latent_frames, 2, first_extra=first - 2) if latent_frames > 2 else [latent_frames]


def measure(
    fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeat: int
) -> tuple[float, float | None, str]:
    """Median seconds, peak allocated GiB during the calls (CUDA), output shape."""
    for _ in range(warmup):
        out = fn()
        del out
    synchronize(device)
    reset_peak_memory(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        shape = "x".join(map(str, out.shape))
        del out
    return statistics.median(times), peak_gib(device, missing=None), shape


def run_model(
    name: str, build: Callable[[], torch.nn.Module], ops: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], dict],
    cases: list[tuple[int, int, int]], args: argparse.Namespace, z_channels: int,
) -> list[Row]:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    model = build().to(device=device, dtype=dtype).eval()
    layout = torch.channels_last_3d if args.channels_last else torch.contiguous_format
    for param in model.parameters():  # conv3d kernels only: `Module.to(memory_format=)` rejects the 1-D/4-D ones
        if param.dim() == 5:
            param.data = param.data.contiguous(memory_format=layout)
    rows = []
    for frames, height, width in cases:
        case = f"{frames}x{height}x{width}"
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = (torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1).to(device, dtype)
        z = torch.randn(1, z_channels, 1 + (frames - 1) // 4, height // 8, width // 8, generator=gen).to(device, dtype)
        x, z = x.contiguous(memory_format=layout), z.contiguous(memory_format=layout)
        for op, fn in ops(model, x, z).items():
            try:
                with torch.no_grad():
                    seconds, peak, shape = measure(fn, device, args.warmup, args.repeat)
                rows.append(Row(name, op, case, seconds, peak, shape))
            except torch.cuda.OutOfMemoryError:
                rows.append(Row(name, op, case, None, None, "-", "OOM"))
            print(f"  measured: {rows[-1]}", flush=True)  # partial results survive a time limit
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del x, z
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def our_ops(vae: torch.nn.Module, x: torch.Tensor, z: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    def encode_chunked_mode() -> torch.Tensor:
        return DiagonalGaussianDistribution(encode_chunked(vae, x, frames_per_chunk=8)).mode()

    return {
        "encode one-pass": lambda: vae.encode(x),
        "encode chunked": encode_chunked_mode,
        "decode one-pass": lambda: vae.decode_chunk(z, first_frame_separate=True, keep_state=False)[0],
        "decode chunked": lambda: decode_chunked(vae, z, latent_chunks(z.shape[2])),
        "decode_first_stage": lambda: decode_first_stage(vae, z, 1.0),
    }


def diffusers_ops(vae: torch.nn.Module, x: torch.Tensor, z: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    return {
        "encode batched": lambda: vae.encode(x).latent_dist.mode(),
        "decode batched": lambda: vae.decode(z).sample,
    }


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    layout = ", channels_last_3d" if args.channels_last else ""
    bench = ", cudnn.benchmark" if args.cudnn_benchmark else ""
    print(f"\nVAE, random weights, {args.dtype}{layout}{bench}, {args.device}, median of {args.repeat} (after {args.warmup} warm-up)")
    header = f"| {'model':<9} | {'op':<18} | {'clip':<12} | {'seconds':>8} | {'peak GiB':>8} | output |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        secs = f"{r.seconds:8.3f}" if r.seconds is not None else f"{r.note:>8}"
        peak = f"{r.peak_gib:8.2f}" if r.peak_gib is not None else f"{'-':>8}"
        print(f"| {r.model:<9} | {r.op:<18} | {r.case:<12} | {secs} | {peak} | {r.shape} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model, tiny clips, fp32")
    p.add_argument("--cases", nargs="+", default=None, help="clips as FRAMESxHEIGHTxWIDTH")
    p.add_argument("--dtype", choices=DTYPES, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-diffusers", action="store_true", help="skip the diffusers rows")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--channels-last", action="store_true", help="weights and clips in channels_last_3d (NDHWC) memory layout")
    args = p.parse_args(argv)
    default_cases = ["9x32x48", "17x64x64"] if args.tiny else ["49x480x720", "81x768x1360"]
    args.cases = args.cases or default_cases
    args.dtype = args.dtype or ("fp32" if args.tiny else "bf16")
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --tiny (or --device cpu)")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.manual_seed(0)
    arch = TINY if args.tiny else RELEASED
    cases = [tuple(int(v) for v in c.lower().split("x")) for c in args.cases]
    ours = lambda: instantiate_from_config(vae_config(arch))  # noqa: E731
    rows = run_model("ours", ours, our_ops, cases, args, arch["z_channels"])
    if not args.no_diffusers:
        rows += run_model("diffusers", lambda: diffusers_vae(arch), diffusers_ops, cases, args, arch["z_channels"])
    print_table(rows, args)


if __name__ == "__main__":
    main()

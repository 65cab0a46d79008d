"""Sampling benchmark: seconds per video (sampler steps with CFG + chunked VAE decode), peak memory.

Builds the engine of any model config with random weights (timing does not depend on the
weights; no T5 or VAE download needed: the text condition is a random T5-sized embedding and
the VAE is randomly initialised), then samples and decodes like sample_video.py.

    python benchmarks/sample_speed.py --base configs/cogvideox_2b.yaml --dtype fp16     # 49x480x720, 50 steps
    python benchmarks/sample_speed.py --base configs/cogvideox_5b.yaml
    python benchmarks/sample_speed.py --base configs/cogvideox1.5_5b.yaml --frames 81 --size 768 1360
    python benchmarks/sample_speed.py --base configs/cogvideox_2b.yaml --compile --attention-backend fa4 --step-cache 0.05
    python benchmarks/sample_speed.py --base configs/cogvideox_2b.yaml --compile max-autotune --attention-backend fa4
    python benchmarks/sample_speed.py --tiny                                             # CPU smoke run

--compile [max-autotune], --attention-backend and --step-cache set the config's `transformer_args.compile`,
`transformer_args.attention_backend` and the sampler's `step_cache_threshold` (the warm-up video
compiles); without them the configs' own values hold.

The official README reports, on one H100 with 50 steps at 49x480x720: 2B about 45 s and 5B
about 90 s per video.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import peak_gib, reset_peak_memory, synchronize  # noqa: E402
from cogvideox_sat.engine import SATVideoDiffusionEngine  # noqa: E402
from cogvideox_sat.models.attention import BACKENDS, resolve_backend  # noqa: E402
from cogvideox_sat.sampling.decoding import decode_samples  # noqa: E402
from cogvideox_sat.sampling.main import sampling_model_config  # noqa: E402
from cogvideox_sat.vae.first_stage import spatial_scale  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OFFICIAL_H100_SECONDS = {"2B": 45, "5B": 90}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", nargs="+", default=None, help="model config(s); default configs/cogvideox_2b.yaml")
    parser.add_argument("--frames", type=int, default=49, help="video frames (4k+1)")
    parser.add_argument("--size", type=int, nargs=2, default=[480, 720], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--warmup", type=int, default=1, help="untimed videos first (2 steps each)")
    parser.add_argument("--repeats", type=int, default=2, help="timed videos")
    parser.add_argument("--decode-chunk-frames", type=int, default=None, help="latent frames per VAE decode chunk")
    parser.add_argument("--no-decode", action="store_true", help="time the sampler only")
    parser.add_argument("--compile", nargs="?", const="true", default=None, choices=("true", "max-autotune"),
                        help="transformer_args.compile: true (layers through torch.compile), or max-autotune")
    parser.add_argument("--attention-backend", choices=BACKENDS, default=None, help="transformer_args.attention_backend")
    parser.add_argument("--step-cache", type=float, default=None, metavar="THRESHOLD",
                        help="sampler step_cache_threshold: skip the blocks after the first on steps that barely change")
    parser.add_argument("--tiny", action="store_true", help="tiny demo model on the CPU (9x64x96, 4 steps, fp32)")
    args = parser.parse_args(argv)
    args.base = args.base if args.base or args.tiny else [str(REPO / "configs" / "cogvideox_2b.yaml")]
    if args.tiny:
        args.base = args.base or [str(REPO / "configs" / "demo" / "tiny_t2v.yaml")]
        args.frames, args.size, args.steps, args.dtype, args.warmup, args.repeats = 9, [64, 96], 4, "fp32", 0, 1
    return args


class NetworkOnDeviceEngine(SATVideoDiffusionEngine):
    """The engine with its DiT constructed directly on `args.device`: random init of billions of
    parameters takes seconds on a GPU and minutes on a CPU. The rest builds on the CPU (the
    noise schedules are computed with numpy) and moves afterwards."""

    def _build_network(self, cfg: Any) -> torch.nn.Module:
        with torch.device(self.device):
            return super()._build_network(cfg)


def model_config(paths: list[str], steps: int, args: argparse.Namespace | None = None) -> Any:
    """The `model:` section for sampling, with random-weight stand-ins for T5 and the VAE file,
    and the speed switches of `args` (--compile, --attention-backend, --step-cache) applied."""
    cfg = sampling_model_config(OmegaConf.merge(*[OmegaConf.load(p) for p in paths]).model)
    transformer_args = "network_config.params.transformer_args"
    if args is not None and args.compile:
        OmegaConf.update(cfg, f"{transformer_args}.compile", True if args.compile == "true" else args.compile, force_add=True)
    if args is not None and args.attention_backend:
        OmegaConf.update(cfg, f"{transformer_args}.attention_backend", args.attention_backend, force_add=True)
    if args is not None and args.step_cache is not None:
        OmegaConf.update(cfg, "sampler_config.params.step_cache_threshold", args.step_cache, force_add=True)
    cfg.conditioner_config = None
    if OmegaConf.select(cfg, "first_stage_config.params") is not None:
        cfg.first_stage_config.params.ckpt_path = None
    cfg.sampler_config.params.num_steps = steps
    cfg.sampler_config.params.verbose = False
    if OmegaConf.select(cfg, "sampler_config.params.guider_config.params.num_steps") is not None:
        cfg.sampler_config.params.guider_config.params.num_steps = steps
    return cfg


def attention_kernel(dit: Any, device: torch.device, dtype: torch.dtype) -> str:
    """The attention kernel the DiT's backend setting resolves to here ('auto': SDPA's choice)."""
    return resolve_backend(dit.attention_backend, device, dtype, dit.hidden_size // dit.num_attention_heads)


def step_cache_summary(engine: Any) -> str | None:
    """The step cache's skip count and per-step changes (StepCache.summary) of the last video, where it is on."""
    cache = getattr(engine.sampler, "last_step_cache", None)
    threshold = getattr(engine.sampler, "step_cache_threshold", 0) or 0
    if not threshold or cache is None:
        return None
    return cache.summary()


def text_condition(cfg: Any, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
    """A random T5-sized text embedding (cond) and zeros (uncond, as CogVideoX's CFG uses)."""
    modules = cfg.network_config.params.modules
    length = int(modules.pos_embed_config.params.text_length)
    width = int(modules.patch_embed_config.params.text_hidden_size)
    text = torch.randn(1, length, width, device=device, dtype=dtype)
    return {"crossattn": text}, {"crossattn": torch.zeros_like(text)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = DTYPES[args.dtype]
    cfg = model_config(args.base, args.steps, args)

    # 1. engine with random weights, built on the device (fast init), cast to the precision
    ns = argparse.Namespace(model_config=cfg, fp16=args.dtype == "fp16", bf16=args.dtype == "bf16", device=device)
    torch.manual_seed(0)
    engine = NetworkOnDeviceEngine(ns)
    engine = engine.to(device=device, dtype=dtype).eval().requires_grad_(False)
    dit_params = sum(p.numel() for p in engine.model.diffusion_model.parameters())

    # 2. shapes and conditions, as sample_video.py builds them
    scale = spatial_scale(engine.first_stage_model)
    t = (args.frames - 1) // 4 + 1
    t += (-t) % engine.temporal_patch_size  # CogVideoX 1.5: one padding latent in front
    shape = (t, engine.diffusion_model.out_channels, args.size[0] // scale, args.size[1] // scale)
    c, uc = text_condition(cfg, device, dtype)
    if engine.noised_image_input:
        c["concat"] = uc["concat"] = torch.zeros(1, *shape, device=device, dtype=dtype)

    def one_video(steps: int) -> tuple[float, float]:
        synchronize(device)
        start = time.perf_counter()
        z = engine.sample(c, uc=uc, batch_size=1, shape=shape, num_steps=steps)
        synchronize(device)
        sampled = time.perf_counter() - start
        if args.no_decode:
            return sampled, 0.0
        start = time.perf_counter()
        video = decode_samples(engine, z, chunk_frames=args.decode_chunk_frames)
        synchronize(device)
        assert video.shape[1] >= 1
        return sampled, time.perf_counter() - start

    # 3. warm-up (kernels, allocator), then timed videos
    with torch.no_grad():
        for _ in range(args.warmup):
            one_video(min(2, args.steps))
        reset_peak_memory(device)
        times = [one_video(args.steps) for _ in range(args.repeats)]

    sample_s = [s for s, _ in times]
    decode_s = [d for _, d in times]
    total = [s + d for s, d in times]
    result = {
        "config": " ".join(Path(p).name for p in args.base),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "dit_params": dit_params,
        "video": f"{args.frames}x{args.size[0]}x{args.size[1]}",
        "latent": list(shape),
        "steps": args.steps,
        "seconds_per_video": round(statistics.mean(total), 2),
        "seconds_per_video_std": round(statistics.pstdev(total), 2),
        "sampling_s": round(statistics.mean(sample_s), 2),
        "seconds_per_step": round(statistics.mean(sample_s) / args.steps, 3),
        "decode_s": round(statistics.mean(decode_s), 2),
        "peak_gib": round(peak_gib(device), 1) if device.type == "cuda" else None,
        "compile": OmegaConf.select(cfg, "network_config.params.transformer_args.compile", default=False),
        "attention_backend": attention_kernel(engine.diffusion_model, device, dtype),
        "step_cache": step_cache_summary(engine),
    }
    print(
        f"{result['config']}: {result['seconds_per_video']} s per video ({result['video']}, {args.steps} steps, {args.dtype}; "
        f"sampling {result['sampling_s']} s = {result['seconds_per_step']} s/step, decode {result['decode_s']} s, "
        f"peak {result['peak_gib']} GiB; attention {result['attention_backend']}, compile {result['compile']}"
        + (f", step cache {result['step_cache']}" if result["step_cache"] else "") + f") on {result['device']}"
    )
    print(f"official README (H100, 50 steps, 49x480x720): {OFFICIAL_H100_SECONDS}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""Lower bound of a DiT training step on this GPU, from its kernels timed alone.

A CogVideoX layer's work is its projections (qkv, attention output, MLP in and out: 12 h^2 MACs
per token) and attention (4 S^2 h FLOPs forward). This times, at the model's exact shapes, each
projection matmul (forward, input gradient and, for full fine-tuning, weight gradient), the
LoRA matmuls, and attention forward + backward with every available backend (FlashAttention-4
where installed, SDPA's), then adds them up per step: the step time no implementation of this
model can beat with these kernels, whatever it fuses or caches. Elementwise work (norms,
modulation, RoPE, GELU, residuals) is left out, so a real step is always slower than this bound.

    python benchmarks/roofline.py configs/cogvideox_2b.yaml --lora-rank 128 --diffusers-s 1.286
    python benchmarks/roofline.py configs/cogvideox_5b.yaml --full
    python benchmarks/roofline.py configs/cogvideox_2b.yaml --fp8 --backends fa4   # projections in FP8 (transformer_args.fp8)
    python benchmarks/roofline.py configs/cogvideox_2b.yaml --tiny     # CPU smoke run

Bounds printed: `no recompute` (every activation kept) and `selective` (projections computed
twice, attention once: what fits a small memory budget), and `full` checkpointing (the whole
forward twice). With --diffusers-s (a diffusers step measured in the same run, e.g. by
benchmarks/vs_diffusers.py) each bound is also given as a ratio to it: a target ratio below the
bound cannot be met with these kernels.

`--fp8` times the projections as `transformer_args.fp8: tensorwise` runs them: torch._scaled_mm
on e4m3 activations and weights (e5m2 output gradients), bf16 out, the token dimension padded to
a multiple of 16 where it is a matmul's inner size; the casts to FP8 are left out with the rest of
the elementwise work, and LoRA adapters stay in the compute dtype.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import print_header  # noqa: E402
from dit_step import DTYPES, make_inputs, measuring_device, network_config, shrink  # noqa: E402

from cogvideox_sat.models import flash_attention4  # noqa: E402
from cogvideox_sat.models.attention import BACKENDS, attention, attention_bshd  # noqa: E402
from cogvideox_sat.registry import instantiate_from_config  # noqa: E402


@dataclass(frozen=True)
class Shapes:
    tokens: int  # text + video tokens of one sample
    hidden: int
    heads: int
    layers: int
    mlp: int  # MLP inner width
    gated: bool = False  # SwiGLU: two input projections


def model_shapes(cfg: dict, frames: int, height: int, width: int) -> Shapes:
    with torch.device("meta"):
        model = instantiate_from_config(cfg)
    kwargs = make_inputs(model, 1, frames, height, width, "meta", torch.bfloat16)
    _, t, _, h, w = kwargs["x"].shape
    pt, ph, pw = model.patch_size
    tokens = kwargs["context"].shape[1] + (t // pt) * (h // ph) * (w // pw)
    mlp = model.transformer.layers[0].mlp.dense_h_to_4h.weight.shape[0]
    return Shapes(tokens, model.hidden_size, model.num_attention_heads, model.num_layers, mlp, gated="swiglu" in model.mixins)


def timed(fn, device: torch.device, repeat: int) -> float:
    """Median seconds of `fn()` after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fp8_matmuls(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> dict[str, Any]:
    """The three matmuls of a projection y = x w^T as torch._scaled_mm runs them with tensorwise
    scales: x, w in e4m3, the output gradient g in e5m2, each operand in the memory order
    _scaled_mm wants (first row-major, second column-major), bf16 results."""
    e4, e5, one = torch.float8_e4m3fn, torch.float8_e5m2, torch.ones((), device=x.device)
    pad = -x.shape[0] % 16  # the weight gradient's inner size is the token count
    x8, w8 = x.to(e4), w.to(e4)
    g8 = g.to(e5)
    g8_rows_t = torch.nn.functional.pad(g8.t().float(), (0, pad)).to(e5).contiguous()  # (n, M + pad)
    x8_cols = torch.nn.functional.pad(x8.float(), (0, 0, 0, pad)).to(e4).t().contiguous().t()  # (M + pad, k), column-major
    w8_cols = w8.t().contiguous().t()  # (n, k) column-major, for g w
    mm = partial(torch._scaled_mm, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    return {
        "forward": lambda: mm(x8, w8.t()),
        "input_grad": lambda: mm(g8, w8_cols),
        "weight_grad": lambda: mm(g8_rows_t, x8_cols),
    }


def projection_times(s: Shapes, lora_rank: int | None, device, dtype, repeat: int, batch: int = 1, fp8: bool = False) -> dict[str, float]:
    """Seconds per layer: forward, input gradient, weight gradient of the projections; LoRA
    forward + backward of the adapted ones (qkv and attention output, as the official LoRA).
    `batch` samples of `s.tokens` tokens each go through every projection as one matrix;
    `fp8`: the projections (not the adapters) as `fp8_matmuls`."""
    x_of = {"qkv": s.hidden, "dense": s.hidden, "fc1": s.hidden, "fc2": s.mlp}
    out_of = {"qkv": 3 * s.hidden, "dense": s.hidden, "fc1": s.mlp * (2 if s.gated else 1), "fc2": s.hidden}
    result = {"forward": 0.0, "input_grad": 0.0, "weight_grad": 0.0, "lora": 0.0}
    for name in ("qkv", "dense", "fc1", "fc2"):
        k, n = x_of[name], out_of[name]
        x = torch.randn(batch * s.tokens, k, device=device, dtype=dtype)
        w = torch.randn(n, k, device=device, dtype=dtype) / math.sqrt(k)
        g = torch.randn(batch * s.tokens, n, device=device, dtype=dtype)
        bf16 = {"forward": lambda: x @ w.t(), "input_grad": lambda: g @ w, "weight_grad": lambda: g.t() @ x}
        kernels = fp8_matmuls(x, w, g) if fp8 else bf16
        for part, kernel in kernels.items():
            result[part] += timed(kernel, device, repeat)
        del kernels
        if lora_rank and name in ("qkv", "dense"):
            a = torch.randn(lora_rank, k, device=device, dtype=dtype) / math.sqrt(k)
            b = torch.randn(n, lora_rank, device=device, dtype=dtype) / math.sqrt(lora_rank)
            xa = x @ a.t()
            gb = g @ b

            def lora_step() -> None:
                (x @ a.t()) @ b.t()  # forward
                gb @ a  # input gradient
                g.t() @ xa  # dB
                gb.t() @ x  # dA

            result["lora"] += timed(lora_step, device, repeat)
        del x, w, g
    return result


def attention_time(s: Shapes, backend: str, device, dtype, repeat: int, batch: int = 1, backward: bool = True) -> tuple[float, float]:
    """Seconds per layer of attention forward, and forward + backward (nan unless `backward`),
    with `backend`, each in the layout the model hands it: (B, heads, S, d) for SDPA, (B, S,
    heads, d) for FA4."""
    head_dim = s.hidden // s.heads
    if backend == "fa4":
        reason = flash_attention4.unavailable_reason(device, dtype, head_dim, 0.0)
        if reason is not None:
            raise RuntimeError(f"FlashAttention-4 {reason}")
    shape = (batch, s.tokens, s.heads, head_dim) if backend == "fa4" else (batch, s.heads, s.tokens, head_dim)
    kernel = attention_bshd if backend == "fa4" else attention
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape, device=device, dtype=dtype)
    with torch.no_grad():
        forward = timed(lambda: kernel(q, k, v, backend=backend), device, repeat)
    if not backward:
        return forward, math.nan

    def both() -> None:
        out = kernel(q, k, v, backend=backend)
        torch.autograd.grad(out, (q, k, v), grad)

    return forward, timed(both, device, repeat)


def bounds(proj: dict[str, float], attn_fwd: float, attn_both: float, layers: int, lora: bool) -> dict[str, float]:
    """Step lower bounds (seconds) for each checkpointing policy."""
    matmul = proj["forward"] + proj["input_grad"] + (proj["lora"] if lora else proj["weight_grad"])
    keep_all = layers * (matmul + attn_both)
    selective = keep_all + layers * proj["forward"]
    full = selective + layers * attn_fwd
    return {"no recompute": keep_all, "selective": selective, "full": full}


def sampling_bound(proj: dict[str, float], attn_fwd: float, layers: int, steps: int, decode_s: float) -> dict[str, float]:
    """Sampling lower bounds (seconds): one denoising step (every layer's projections and
    attention forward, CFG batch included in the timings) and a whole video (steps + decode)."""
    step = layers * (proj["forward"] + attn_fwd)
    return {"step": step, "video": steps * step + decode_s}


def print_sampling(args: argparse.Namespace, s: Shapes, device, dtype) -> dict[str, dict[str, float]]:
    batch = 2  # CFG: conditional and unconditional inputs as one batch
    proj = projection_times(s, None, device, dtype, args.repeat, batch=batch, fp8=args.fp8)
    print(f"sampling: {args.steps} steps, CFG as one batch of {batch}, forward only; projections{' (FP8)' if args.fp8 else ''} {proj['forward'] * 1e3:.2f} ms a layer"
          + (f"; decode {args.decode_s:.2f} s" if args.decode_s else "; decode not included (--decode-s)"))
    attn_flops = batch * 4 * s.tokens**2 * s.hidden
    print_header(f"{'attention':<10} {'fwd ms':>7} {'TFLOP/s':>8} | {'step s':>7} | {'video s':>7}" + (f" | {'vs target':>9}" if args.target_s else ""))
    results: dict[str, dict[str, float]] = {}
    for backend in args.backends:
        try:
            fwd, _ = attention_time(s, backend, device, dtype, args.repeat, batch=batch, backward=False)
        except RuntimeError as err:
            print(f"{backend:<10} unavailable: {str(err).splitlines()[0][:80]}")
            continue
        results[backend] = sampling_bound(proj, fwd, s.layers, args.steps, args.decode_s)
        step, video = results[backend]["step"], results[backend]["video"]
        target = f" | {video / args.target_s:>8.2f}x" if args.target_s else ""
        print(f"{backend:<10} {fwd * 1e3:>7.2f} {attn_flops / fwd / 1e12:>8.1f} | {step:>7.3f} | {video:>7.2f}{target}")
    if args.target_s:
        print(f"(a video cannot take less than 'video s' with these kernels; target {args.target_s:.1f} s; elementwise work not included)")
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="+", help="model config(s) (merged)")
    parser.add_argument("--lora-rank", type=int, default=128)
    parser.add_argument("--full", action="store_true", help="full fine-tuning (weight gradients of every projection)")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--backends", nargs="+", default=["fa4", "cudnn", "flash", "efficient"], choices=[b for b in BACKENDS if b != "auto"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--diffusers-s", type=float, default=None, help="a diffusers step measured in the same run (seconds)")
    parser.add_argument("--sampling", action="store_true", help="bound a sampled video instead of a training step")
    parser.add_argument("--steps", type=int, default=50, help="--sampling: denoising steps per video")
    parser.add_argument("--decode-s", type=float, default=0.0, help="--sampling: seconds of one VAE decode, added to the video")
    parser.add_argument("--target-s", type=float, default=None, help="--sampling: seconds per video to compare against")
    parser.add_argument("--fp8", action="store_true", help="projections as FP8 matmuls (transformer_args.fp8: tensorwise)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (smoke run)")
    args = parser.parse_args(argv)
    if args.sampling and (args.full or args.diffusers_s):
        parser.error("--full and --diffusers-s bound a training step; --sampling bounds a video (use --target-s)")
    if not args.sampling and (args.decode_s or args.target_s or args.steps != parser.get_default("steps")):
        parser.error("--steps, --decode-s and --target-s need --sampling")

    cfg = network_config(args.config)
    if args.tiny:
        cfg = shrink(cfg)
        args.frames, args.height, args.width, args.repeat, args.dtype, args.backends = 13, 64, 96, 1, "fp32", ["math"]
    device = measuring_device(args.tiny)
    dtype = DTYPES[args.dtype]
    s = model_shapes(cfg, args.frames, args.height, args.width)
    lora = not args.full
    print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, torch {torch.__version__}, {args.dtype}")
    work = "sampling" if args.sampling else f"LoRA r{args.lora_rank}" if lora else "full fine-tuning"
    print(f"{Path(args.config[-1]).name}: {s.layers} layers, hidden {s.hidden}, {s.heads} heads, MLP {s.mlp}, {s.tokens} tokens "
          f"({args.frames}x{args.height}x{args.width}), {work}" + (", FP8 projections" if args.fp8 else ""))
    if args.sampling:
        return print_sampling(args, s, device, dtype)

    proj = projection_times(s, args.lora_rank if lora else None, device, dtype, args.repeat, fp8=args.fp8)
    print("per layer, ms: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in proj.items() if lora or k != "lora"))
    results: dict[str, dict[str, float]] = {}
    attn_flops = 4 * s.tokens**2 * s.hidden
    header = f"{'attention':<10} {'fwd ms':>7} {'f+b ms':>7} {'TFLOP/s':>8} | " + " | ".join(f"{k + ' s':>15}" for k in ("no recompute", "selective", "full"))
    print_header(header)
    for backend in args.backends:
        try:
            fwd, both = attention_time(s, backend, device, dtype, args.repeat)
        except RuntimeError as err:  # the backend does not support this device/shape
            print(f"{backend:<10} unavailable: {str(err).splitlines()[0][:80]}")
            continue
        results[backend] = bounds(proj, fwd, both, s.layers, lora)
        cells = []
        for value in results[backend].values():
            ratio = f" ({value / args.diffusers_s:.2f}x)" if args.diffusers_s else ""
            cells.append(f"{value:>7.3f}{ratio:>8}")
        print(f"{backend:<10} {fwd * 1e3:>7.2f} {both * 1e3:>7.2f} {3 * attn_flops / both / 1e12:>8.1f} | " + " | ".join(f"{c:>15}" for c in cells))
    if args.diffusers_s:
        print(f"(ratios to the diffusers step of {args.diffusers_s:.3f} s; elementwise work not included)")
    return results


if __name__ == "__main__":
    main()

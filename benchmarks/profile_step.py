"""Where a DiT training step's GPU time goes: kernel time by category, and the GPU's idle time.

Runs `dit_step.py`'s forward + backward (one setting, warm) under torch.profiler and sums the
CUDA kernels of one step by kind: matmuls (cuBLAS / CUTLASS), attention (cuDNN / flash SDPA),
fused elementwise (inductor's Triton kernels), eager elementwise and reductions, copies and
fills. `idle` is the step's wall time minus the kernels' busy time (launch gaps, host syncs).
Compared with `benchmarks/roofline.py` (matmul + attention kernels timed alone), this says how
much of a step's distance to that bound is elementwise work and how much is gaps.

    python benchmarks/profile_step.py configs/cogvideox_2b_lora.yaml --lora-rank 128 --setting selective+compile
    python benchmarks/profile_step.py configs/cogvideox_5b_lora.yaml --lora-rank 128 --setting selective+compile --top 30
    python benchmarks/profile_step.py configs/cogvideox_2b.yaml --tiny --setting selective   # CPU smoke run
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dit_step import DTYPES, build_ours, make_inputs, measuring_device, network_config, parse_setting, shrink, with_lora  # noqa: E402
from common import synchronize  # noqa: E402

# First match wins; patterns are matched against lower-cased kernel names.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("attention", r"sdpa|flash|fmha|attention|cudnn"),
    ("matmul", r"gemm|nvjet|cutlass|xmma|splitk|sm90_|sm80_"),
    ("fused (triton)", r"^triton"),
    ("copy / cat", r"copy|memcpy|cat|transpose|permute"),
    ("fill", r"memset|fill"),
    ("norm / reduce", r"norm|reduce|welford|softmax"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise"),
)


def category(name: str) -> str:
    low = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, low):
            return label
    return "other"


def kernel_events(prof) -> list[tuple[str, float, float]]:
    """(name, start us, duration us) of every GPU kernel / memcpy / memset the profiler saw."""
    out = []
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and event.time_range.elapsed_us() > 0:
            out.append((event.name, float(event.time_range.start), float(event.time_range.elapsed_us())))
    return out


def busy_us(events: list[tuple[str, float, float]]) -> float:
    """Union of the kernels' time ranges (overlapping streams are counted once)."""
    total, end = 0.0, float("-inf")
    for _, start, dur in sorted(events, key=lambda e: e[1]):
        stop = start + dur
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="+")
    parser.add_argument("--full", action="store_true", help="full fine-tuning (drop lora_config)")
    parser.add_argument("--lora-rank", type=int, default=None)
    parser.add_argument("--setting", type=parse_setting, default=parse_setting("selective+compile"), metavar="MODE[+compile|+autotune][+BACKEND][+fp8|+fp8row]")
    parser.add_argument("--attention-backend", default="auto")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=20, help="also list the N kernels with the most time")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU (smoke test)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    cfg = with_lora(network_config(args.config), args.lora_rank, args.full, None)
    if args.tiny:
        cfg = shrink(cfg)
        args.frames, args.height, args.width, args.warmup = 13, 64, 96, 1
    device = measuring_device(args.tiny)
    dtype = DTYPES[args.dtype]
    cfg["params"]["dtype"] = args.dtype
    compile_backend = "aot_eager" if args.tiny else "inductor"
    model, _ = build_ours(cfg, args.setting, device, dtype, args.attention_backend, compile_backend)
    kwargs = make_inputs(model, 1, args.frames, args.height, args.width, device, dtype)

    def step() -> None:
        model(**kwargs).float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        step()
        synchronize(device)
        wall_us = (time.perf_counter() - start) * 1e6

    events = kernel_events(prof)
    by_cat: dict[str, float] = defaultdict(float)
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for name, _, dur in events:
        by_cat[category(name)] += dur
        by_name[name][0] += dur
        by_name[name][1] += 1
    busy = busy_us(events)
    print(f"\n{Path(args.config[-1]).stem} {args.setting.label}, {args.frames}x{args.height}x{args.width}, {args.dtype}: "
          f"step {wall_us / 1e6:.3f} s (profiled), GPU busy {busy / 1e6:.3f} s, {len(events)} kernels")
    print(f"{'category':<16} {'seconds':>8} {'share':>6}")
    for label, us in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"{label:<16} {us / 1e6:>8.3f} {us / max(wall_us, 1):>6.1%}")
    idle = max(wall_us - busy, 0.0)
    print(f"{'idle (gaps)':<16} {idle / 1e6:>8.3f} {idle / max(wall_us, 1):>6.1%}")
    if args.top:
        print(f"\ntop {args.top} kernels by time:")
        for name, (us, count) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[: args.top]:
            print(f"{us / 1e6:>8.4f} s {count:>5}x  [{category(name)}] {name[:110]}")
    summary = {label: us / 1e6 for label, us in by_cat.items()}
    summary.update(wall=wall_us / 1e6, busy=busy / 1e6, idle=idle / 1e6)
    return summary


if __name__ == "__main__":
    main()

"""The fast paths on one GPU, in one process: attention backends, FP8 matmuls, FP8 base storage, step cache.

Training rows: DiT forward + backward (no optimizer step) of 2B and 5B with LoRA r128, batch 1,
49x480x720 bf16, random weights, as benchmarks/vs_diffusers.py measures ours: step time, peak
memory, TFLOP/s (model FLOPs), first step (compilation included). A row is `MODEL/SETTING`:
SETTING is dit_step's `MODE[+compile|+autotune][+BACKEND][+fp8|+fp8row]` (FP8 matmuls, tensorwise or
rowwise) plus `+store8` (FP8 base storage).

Sampling rows: 2B (random weights, random T5-sized text, CFG as one batch, compiled layers),
50 steps of the config's sampler at 49x480x720 without decoding; `+cacheT` samples with the
first-block step cache at threshold T, reporting the skipped steps and the PSNR of its latents
against the uncached ones of the same seed, and the first block's change per step (min / median /
max) that the threshold is compared with. Random weights give other changes than trained ones (on
an H100, 2B: 0.3-1.0 per step), so their skip counts differ; the time per computed step does not.

    python benchmarks/fast_paths.py                                   # every case (~15 min: use --only)
    python benchmarks/fast_paths.py --only cudnn store8 --budget-s 480 # cases whose label contains a word
    python benchmarks/fast_paths.py --tiny                            # CPU smoke run (toy sizes)

Each case is built, measured and freed before the next; one that fails is reported and the run
goes on; no case starts after --budget-s (listed as skipped), so the table prints in time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import mean_std, peak_gib, print_header, reset_peak_memory, synchronize  # noqa: E402
from dit_step import DTYPES, Setting, build_ours, make_inputs, measure, measuring_device, parse_setting, release, step_flops  # noqa: E402
from vs_diffusers import error_text, our_config  # noqa: E402

from cogvideox_sat.models import dit as dit_module  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN_CASES = (
    "2b-lora/selective+compile+cudnn",
    "2b-lora/selective+compile+fa4",
    "2b-lora/selective+compile+cudnn+fp8",
    "2b-lora/selective+compile+fa4+fp8",
    "2b-lora/selective+compile+fa4+fp8row",
    "5b-lora/selective+compile+cudnn",
    "5b-lora/selective+compile+fa4",
    "5b-lora/selective+compile+fa4+fp8",
    "5b-lora/full+compile+cudnn",
    "5b-lora/full+cudnn",
    "5b-lora/full+cudnn+store8",  # FP8 storage runs eager (compiled, its layers keep their MLP activations)
    "5b-lora/selective+cudnn+store8",
    "5b-lora/selective+fa4+store8",
)
SAMPLE_CASES = ("2b-sample/fa4", "2b-sample/fa4+cache0.05", "2b-sample/fa4+cache0.1", "2b-sample/cudnn")


@dataclass
class Row:
    case: str
    seconds: float = float("nan")
    std: float = 0.0
    peak_gib: float = float("nan")
    first_step: float = float("nan")
    tflops: float = float("nan")
    note: str = ""
    error: str = ""


# ---- cases --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainCase:
    model: str  # vs_diffusers.MODELS key
    setting: Setting  # dit_step's MODE[+compile|+autotune][+BACKEND][+fp8|+fp8row]
    store8: bool = False


def parse_train(label: str) -> TrainCase:
    model, _, spec = label.partition("/")
    parts = spec.split("+")
    return TrainCase(model, parse_setting("+".join(p for p in parts if p != "store8")), "store8" in parts)


def build_train(case: TrainCase, args, device, dtype):
    """Our LoRA DiT for `case`, LoRA-only trainable, with its inputs and model FLOPs."""
    cfg = our_config(case.model, args.lora_rank, args.tiny, args.dtype)
    if case.store8:  # a construction-time option, like fp8 (which build_ours applies)
        cfg["params"]["transformer_args"]["fp8_base_storage"] = True
    setting = dataclasses.replace(case.setting, backend="auto") if args.tiny else case.setting  # CPU: no cuDNN / FA4
    torch.manual_seed(0)
    model, _ = build_ours(cfg, setting, device, dtype, "auto", args.compile_backend)
    kwargs = make_inputs(model, 1, args.frames, args.height, args.width, device, dtype)
    return model, kwargs, step_flops(model, kwargs, frozen_base=True)


def run_train(label: str, args, device, dtype) -> Row:
    row = Row(label)
    model = kwargs = None
    try:
        case = parse_train(label)
        model, kwargs, flops = build_train(case, args, device, dtype)

        def step() -> None:
            model(**kwargs).float().pow(2).mean().backward()
            model.zero_grad(set_to_none=True)

        times, row.first_step, row.peak_gib = measure(step, device, args.warmup, args.steps)
        row.seconds, row.std = mean_std(times)
        row.tflops = flops / row.seconds / 1e12
        base = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
        row.note = f"frozen weights {base / 2**30:.1f} GiB"
    except Exception as err:  # report and go on: one device run must not lose the other cases
        traceback.print_exc()
        row.error = error_text(err)
    del model, kwargs
    release(device)
    return row


# ---- sampling -----------------------------------------------------------------------------------
def sampling_engine(args, device, dtype, backend: str):
    """The 2B engine (random weights, no T5/VAE files) with compiled layers and `backend`."""
    from sample_speed import NetworkOnDeviceEngine, model_config

    cfg = model_config([str(REPO / ("configs/demo/tiny_t2v.yaml" if args.tiny else "configs/cogvideox_2b.yaml"))], args.sample_steps)
    cfg.network_config.params.dtype = args.dtype
    ns = argparse.Namespace(model_config=cfg, fp16=args.dtype == "fp16", bf16=args.dtype == "bf16", device=device)
    torch.manual_seed(0)
    engine = NetworkOnDeviceEngine(ns).to(device=device, dtype=dtype).eval().requires_grad_(False)
    dit = engine.model.diffusion_model
    dit.set_attention_backend("auto" if args.tiny else backend)
    dit.set_compile(True, args.compile_backend)
    return engine, cfg


def run_sampling(labels: list[str], args, device, dtype, start: float) -> list[Row]:
    """All sampling cases of one backend share one engine; the uncached latents of the same
    seed are the PSNR reference of the cached ones."""
    from sample_speed import text_condition

    rows: list[Row] = []
    by_backend: dict[str, list[str]] = {}
    for label in labels:
        by_backend.setdefault(label.split("/")[1].split("+")[0], []).append(label)
    for backend, group in by_backend.items():
        engine = None
        if time.perf_counter() - start > args.budget_s:
            rows += [Row(label, error=f"skipped: past the {args.budget_s:.0f} s budget") for label in group]
            continue
        try:
            engine, cfg = sampling_engine(args, device, dtype, backend)
            scale = 8
            t = (args.frames - 1) // 4 + 1
            shape = (t, engine.diffusion_model.out_channels, args.height // scale, args.width // scale)
            c, uc = text_condition(cfg, device, dtype)

            def video(threshold: float | None, steps: int) -> tuple[torch.Tensor, float]:
                engine.sampler.step_cache_threshold = threshold
                torch.manual_seed(42)
                synchronize(device)
                begin = time.perf_counter()
                z = engine.sample(c, uc=uc, batch_size=1, shape=shape, num_steps=steps)
                synchronize(device)
                return z.float(), time.perf_counter() - begin

            with torch.no_grad():
                _, first = video(None, 2)  # compiles the layers
                reference = None
                for label in [g for g in group if "+cache" not in g] + [g for g in group if "+cache" in g]:
                    row = Row(label, first_step=first)
                    if time.perf_counter() - start > args.budget_s:
                        row.error = f"skipped: past the {args.budget_s:.0f} s budget"
                        rows.append(row)
                        continue
                    threshold = float(label.split("+cache")[1]) if "+cache" in label else None
                    reset_peak_memory(device)
                    z, row.seconds = video(threshold, args.sample_steps)
                    row.peak_gib = peak_gib(device)
                    cache = engine.sampler.last_step_cache
                    if threshold is None:
                        reference = z
                        row.note = f"{args.sample_steps} steps, {row.seconds / args.sample_steps:.3f} s/step"
                    else:
                        psnr = latent_psnr(z, reference) if reference is not None else float("nan")
                        row.note = f"{cache.summary()}, PSNR {psnr:.1f} dB vs uncached"
                    rows.append(row)
                    print(f"  {label:<44} {row.seconds:.2f} s, {row.note}", flush=True)
        except Exception as err:
            traceback.print_exc()
            done = {r.case for r in rows}
            rows += [Row(label, error=error_text(err)) for label in group if label not in done]
        del engine
        release(device)
    return rows


def latent_psnr(z: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR of `z` against `reference`, peak = the reference's value range."""
    mse = (z - reference).pow(2).mean().item()
    peak = (reference.max() - reference.min()).item()
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)


# ---- output -------------------------------------------------------------------------------------
def print_table(rows: list[Row], args, device) -> None:
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\nFast paths on {card}, torch {torch.__version__}, clip {args.frames}x{args.height}x{args.width}, {args.dtype}, batch 1, LoRA r{args.lora_rank}")
    header = f"{'case':<44} {'time s':>14} {'peak GiB':>9} {'TFLOP/s':>8} {'1st s':>7}  note"
    print_header(header)
    for r in rows:
        if r.error:
            print(f"{r.case:<44} {'' if r.error.startswith('skipped') else 'FAILED '}{r.error}")
            continue
        peak = "-" if math.isnan(r.peak_gib) else f"{r.peak_gib:.1f}"
        tflops = "-" if math.isnan(r.tflops) else f"{r.tflops:.0f}"
        print(f"{r.case:<44} {r.seconds:>7.3f}+-{r.std:.3f} {peak:>9} {tflops:>8} {r.first_step:>7.1f}  {r.note}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(TRAIN_CASES + SAMPLE_CASES), help="case labels (see the module docstring)")
    parser.add_argument("--only", nargs="+", default=None, help="keep the cases whose label contains any of these words")
    parser.add_argument("--lora-rank", type=int, default=128)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per case")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--budget-s", type=float, default=540, help="start no new case after this many seconds")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU (smoke test: aot_eager compile, SDPA for every backend, FP8 switches allowed on the CPU)")
    args = parser.parse_args(argv)
    if args.only:
        args.cases = [c for c in args.cases if any(word in c for word in args.only)]
    if args.tiny:
        args.frames, args.height, args.width, args.steps, args.warmup, args.lora_rank = 9, 64, 96, 1, 1, 4
        args.sample_steps, args.compile_backend = 3, "aot_eager"
        args.dtype = "fp32" if args.dtype == "fp16" else args.dtype
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    device = measuring_device(args.tiny)
    if args.tiny:
        dit_module.ALLOW_CPU_FOR_TESTS = True  # smoke run of the GPU-only switches on toy sizes
    if device.type == "cuda":
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    dtype = DTYPES[args.dtype]
    start = time.perf_counter()
    rows: list[Row] = []
    for label in (c for c in args.cases if "-sample/" not in c):
        if time.perf_counter() - start > args.budget_s:
            rows.append(Row(label, error=f"skipped: past the {args.budget_s:.0f} s budget"))
            continue
        rows.append(run_train(label, args, device, dtype))
        r = rows[-1]
        print(f"  {label:<44} " + (r.error or f"{r.seconds:.3f} s, {r.peak_gib:.1f} GiB, first step {r.first_step:.1f} s"), flush=True)
    samples = [c for c in args.cases if "-sample/" in c]
    if samples:
        rows += run_sampling(samples, args, device, dtype, start)
    print_table(rows, args, device)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()

"""Ours vs diffusers: DiT forward+backward time and peak memory, in one process, same shapes.

For each model (2B / 5B; LoRA r128 on q, k, v and the attention output, or full fine-tuning)
this runs diffusers' `CogVideoXTransformer3DModel` the way its CogVideoX training scripts do
(PEFT LoRA via `add_adapter`, `enable_gradient_checkpointing()`, bf16) and our
`DiffusionTransformer` with each `--ours` setting, all with random weights and the same random
inputs (batch 1, 49x480x720 -> 13x60x90 latents, 226 text tokens), no optimizer step, and prints
step time, peak memory and the ratios to diffusers.

    python benchmarks/vs_diffusers.py                     # the default table (about 6 min on one H100)
    python benchmarks/vs_diffusers.py --models 2b-lora --ours selective selective+compile selective_mlp_out+compile
    python benchmarks/vs_diffusers.py --tiny              # CPU smoke: toy sizes; also checks both compute one function

A setting is `MODE[+compile|+autotune][+BACKEND][+fp8|+fp8row]` (see benchmarks/dit_step.py): checkpoint
mode, our layers through torch.compile, attention backend (default auto: FlashAttention-4 where
installed, else cuDNN on H100), FP8 projection matmuls (tensorwise / rowwise). Every case is built,
measured and freed before the next; a case that fails (out of memory, a compile error) is
reported in the table and the run goes on; no case starts after --budget-s. "1st s" is the
first warm-up step (compilation included).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dit_step  # noqa: E402
from common import mean_std, print_header  # noqa: E402
from dit_step import DTYPES, Setting, build_ours, make_inputs, measure, measuring_device, network_config, parse_setting, release, shrink, step_flops, with_lora  # noqa: E402

from cogvideox_sat.models.attention import BACKENDS, kernel_context  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS: dict[str, tuple[str, bool]] = {  # name -> (base config, LoRA)
    "2b-lora": ("configs/cogvideox_2b.yaml", True),
    "5b-lora": ("configs/cogvideox_5b.yaml", True),
    "2b-full": ("configs/cogvideox_2b.yaml", False),
    "5b-full": ("configs/cogvideox_5b.yaml", False),
}
DIFFUSERS_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # = our query_key_value + dense


@dataclass
class Row:
    model: str
    impl: str
    setting: str
    seconds: float = float("nan")
    std: float = 0.0
    peak_gib: float = float("nan")
    first_step: float = float("nan")
    tflops: float = float("nan")
    error: str = ""


# ---- models -------------------------------------------------------------------------------------
def our_config(name: str, rank: int, tiny: bool, dtype: str) -> dict[str, Any]:
    base, lora = MODELS[name]
    cfg = with_lora(network_config([str(REPO / base)]), rank if lora else None, full=not lora, targets=None)
    if tiny:
        cfg = shrink(cfg)
    cfg["params"]["dtype"] = dtype
    return cfg


def build_diffusers(ours_cfg: dict[str, Any], lora_rank: int | None, device, dtype):
    """diffusers' transformer with the same architecture as `ours_cfg` (+ PEFT LoRA), as its
    training scripts set it up: base frozen under LoRA, gradient checkpointing on."""
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.utils import logging as diffusers_logging

    from cogvideox_sat.io.diffusers_configs import build_dit_on_meta, transformer_config

    diffusers_logging.set_verbosity_error()  # its note on casting with .to() (nothing is kept in float32 here)
    config = transformer_config(build_dit_on_meta(ours_cfg))
    with torch.device(device):
        model = CogVideoXTransformer3DModel(**config)
    model.to(dtype).train()
    if lora_rank is not None:
        from peft import LoraConfig

        model.requires_grad_(False)
        model.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights=True, target_modules=DIFFUSERS_LORA_TARGETS))
    model.enable_gradient_checkpointing()
    return model


def diffusers_inputs(model, ours_kwargs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The same tensors in diffusers' argument names; RoPE tables as its scripts compute them."""
    x = ours_kwargs["x"]
    _, t, _, h, w = x.shape
    cfg = model.config
    kwargs = {"hidden_states": x, "encoder_hidden_states": ours_kwargs["context"], "timestep": ours_kwargs["timesteps"].long(), "return_dict": False}
    if cfg.use_rotary_positional_embeddings:
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        p, pt = cfg.patch_size, cfg.patch_size_t or 1
        grid = (h // p, w // p)
        kwargs["image_rotary_emb"] = get_3d_rotary_pos_embed(
            cfg.attention_head_dim, None, grid, t // pt, grid_type="slice", max_size=grid, device=x.device
        )
    return kwargs


# ---- one case -----------------------------------------------------------------------------------
def build_case(name: str, impl: str, setting: Setting | None, args, device, dtype):
    """(model, its inputs, the context to run it in, model FLOPs of one forward+backward) for one
    table row; diffusers gets the inputs ours would get, in its argument names."""
    cfg = our_config(name, args.lora_rank, args.tiny, args.dtype)
    torch.manual_seed(0)
    if impl == "ours":
        model, _ = build_ours(cfg, setting, device, dtype, args.attention_backend, args.compile_backend)
        kwargs = make_inputs(model, 1, args.frames, args.height, args.width, device, dtype)
        return model, kwargs, _null, step_flops(model, kwargs, frozen_base=MODELS[name][1])
    model = build_diffusers(cfg, args.lora_rank if MODELS[name][1] else None, device, dtype)
    with torch.device("meta"):
        probe = dit_step.instantiate_from_config(cfg)
    ours_kwargs = make_inputs(probe, 1, args.frames, args.height, args.width, device, dtype)
    flops = step_flops(probe, ours_kwargs, frozen_base=MODELS[name][1])
    backend = args.diffusers_attention

    def context():
        return kernel_context(backend, device) if backend != "torch" else _null()

    return model, diffusers_inputs(model, ours_kwargs), context, flops


def loss_of(model, kwargs: dict[str, Any], diffusers: bool) -> torch.Tensor:
    """The benchmark's loss: mean square of the prediction (diffusers returns a tuple)."""
    out = model(**kwargs)[0] if diffusers else model(**kwargs)
    return out.float().pow(2).mean()


def train_step(model, kwargs: dict[str, Any], diffusers: bool, context) -> None:
    with context():
        loss_of(model, kwargs, diffusers).backward()
    model.zero_grad(set_to_none=True)


def case_label(setting: Setting | None, args) -> str:
    return setting.label if setting else f"ckpt, SDPA {args.diffusers_attention}"


def error_text(err: Exception) -> str:
    """One table cell for a failed case: the exception's type and first line."""
    return f"{type(err).__name__}: {str(err).splitlines()[0][:90] if str(err) else ''}"


def run_case(name: str, impl: str, setting: Setting | None, args, device, dtype) -> Row:
    row = Row(name, impl, case_label(setting, args))
    model = kwargs = None
    try:
        model, kwargs, context, flops = build_case(name, impl, setting, args, device, dtype)
        times, row.first_step, row.peak_gib = measure(lambda: train_step(model, kwargs, impl == "diffusers", context), device, args.warmup, args.steps)
        row.seconds, row.std = mean_std(times)
        row.tflops = flops / row.seconds / 1e12
    except Exception as err:  # report and go on: one device run must not lose the other cases
        traceback.print_exc()
        row.error = error_text(err)
    del model, kwargs
    release(device)
    print(f"  {row.model:<8} {row.impl:<9} {row.setting:<28} " + (row.error or f"{row.seconds:.3f} s, {row.peak_gib:.1f} GiB, first step {row.first_step:.1f} s"), flush=True)
    return row


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ---- checks and output --------------------------------------------------------------------------
def same_function_error(name: str, args) -> float:
    """Max relative difference between our model and diffusers' with our weights converted
    (float32, CPU): shows that the two timed models compute the same function."""
    from cogvideox_sat.io import sat_dit_to_diffusers

    cfg = our_config(name.replace("lora", "full"), args.lora_rank, tiny=True, dtype="fp32")
    torch.manual_seed(0)
    ours = dit_step.instantiate_from_config(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn_like(p) / max(p.shape[-1], 1) ** 0.5)
    theirs = build_diffusers(cfg, None, "cpu", torch.float32).eval()
    theirs.norm_out.norm.eps = 1e-6  # SAT's final-layer LayerNorm eps (diffusers: 1e-5)
    theirs.load_state_dict(sat_dit_to_diffusers(ours.state_dict(), ours.patch_size), strict=True)
    kwargs = make_inputs(ours, 1, args.frames, args.height, args.width, "cpu", torch.float32)
    with torch.no_grad():
        a = ours(**kwargs)
        b = theirs(**diffusers_inputs(theirs, kwargs))[0]
    return ((a - b).abs().max() / b.abs().max()).item()


def print_table(rows: list[Row], args) -> None:
    print(f"\nDiT forward+backward vs diffusers {package_version('diffusers')} + peft {package_version('peft')}, batch 1, clip {args.frames}x{args.height}x{args.width}, {args.dtype}, LoRA r{args.lora_rank}, no optimizer step")
    header = f"{'model':<8} {'impl':<9} {'setting':<28} {'step s':>13} {'peak GiB':>9} {'time/diff':>9} {'mem/diff':>8} {'TFLOP/s':>8} {'1st s':>7}"
    print_header(header)
    for r in rows:
        ref = next((d for d in rows if d.model == r.model and d.impl == "diffusers" and not d.error), None)
        if r.error:
            print(f"{r.model:<8} {r.impl:<9} {r.setting:<28} {'' if r.error.startswith('skipped') else 'FAILED '}{r.error}")
            continue
        ratio = f"{r.seconds / ref.seconds:.3f}" if ref else "-"
        mem = f"{r.peak_gib / ref.peak_gib:.2f}" if ref and not math.isnan(r.peak_gib) else "-"
        peak = "-" if math.isnan(r.peak_gib) else f"{r.peak_gib:.1f}"
        print(f"{r.model:<8} {r.impl:<9} {r.setting:<28} {r.seconds:>7.3f}+-{r.std:.3f} {peak:>9} {ratio:>9} {mem:>8} {r.tflops:>8.1f} {r.first_step:>7.1f}")


def package_version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # only for the header
        return "?"


def build_parser(description: str) -> argparse.ArgumentParser:
    """This benchmark's options (sft_vs_diffusers.py starts from them too)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--ours", nargs="+", type=parse_setting, default=[parse_setting("selective"), parse_setting("selective+compile")], metavar="MODE[+compile|+autotune][+BACKEND][+fp8|+fp8row]")
    parser.add_argument("--no-diffusers", action="store_true", help="only our settings")
    parser.add_argument("--diffusers-attention", default="torch", choices=BACKENDS, help="SDPA backend for diffusers (torch: its own choice, as users run it)")
    parser.add_argument("--attention-backend", default="auto", choices=BACKENDS, help="our SDPA backend unless a setting names one")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of +compile settings")
    parser.add_argument("--lora-rank", type=int, default=128)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=420, help="start no new case after this many seconds (the rest are listed as skipped)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU (smoke test; aot_eager compile)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser(__doc__.splitlines()[0]).parse_args(argv)


def run_device(args: argparse.Namespace) -> torch.device:
    """The device to measure on; --tiny also shrinks the clip, steps and rank for a CPU run."""
    if args.tiny:
        args.frames, args.height, args.width, args.steps, args.warmup, args.lora_rank = 13, 64, 96, 1, 1, 4
        args.compile_backend = "aot_eager" if args.compile_backend == "inductor" else args.compile_backend
        args.dtype = "fp32" if args.dtype == "fp16" else args.dtype
    device = measuring_device(args.tiny)
    if device.type == "cuda":
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    return device


def planned_cases(args: argparse.Namespace) -> list[tuple[str, str, Setting | None]]:
    """(model, implementation, our setting) in table order: per model diffusers, then ours."""
    cases = [(name, "diffusers", None) for name in args.models if not args.no_diffusers]
    cases += [(name, "ours", setting) for name in args.models for setting in args.ours]
    return sorted(cases, key=lambda case: args.models.index(case[0]))


def run_within_budget(args: argparse.Namespace, run_one: Callable[[str, str, Setting | None], Row], row_type: type[Row] = Row) -> list[Row]:
    """`run_one` for every planned case; cases that would start past --budget-s become skipped rows,
    so the table still prints inside an outer timeout."""
    start = time.perf_counter()
    rows = []
    for name, impl, setting in planned_cases(args):
        if time.perf_counter() - start > args.budget_s:
            rows.append(row_type(name, impl, setting.label if setting else "ckpt", error=f"skipped: past the {args.budget_s:.0f} s budget"))
            continue
        rows.append(run_one(name, impl, setting))
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    device = run_device(args)
    dtype = DTYPES[args.dtype]
    start = time.perf_counter()
    rows = run_within_budget(args, lambda name, impl, setting: run_case(name, impl, setting, args, device, dtype))
    print_table(rows, args)
    if args.tiny:
        for name in dict.fromkeys(n.split("-")[0] for n in args.models):
            print(f"{name}: ours vs diffusers with the same weights, max relative difference {same_function_error(name + '-full', args):.1e}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()

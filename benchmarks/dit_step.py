"""DiT training-step benchmark: forward + backward time, peak memory, achieved TFLOP/s.

Builds the `network_config` of any shipped or official config (random weights), runs
forward + backward on random latents of a given clip size (no optimizer step) and prints one
table row per (LoRA or full) x setting. A setting is `MODE[+compile|+autotune][+BACKEND]`: a
checkpoint mode (none, full, selective, selective_mlp_out, selective_matmul), `compile` to run the
layers through torch.compile (`autotune`: in inductor's max-autotune mode, `compile: max-autotune`),
and an SDPA backend overriding --attention-backend.

    python benchmarks/dit_step.py configs/cogvideox_2b_lora.yaml --checkpoint none full selective
    python benchmarks/dit_step.py configs/cogvideox_2b_lora.yaml --lora-rank 128 --checkpoint selective selective+compile selective_mlp_out+compile
    python benchmarks/dit_step.py configs/cogvideox_5b.yaml --full --checkpoint full selective
    python benchmarks/dit_step.py configs/cogvideox_2b.yaml --lora-rank 128 --check-attention
    python benchmarks/dit_step.py configs/cogvideox_2b.yaml --tiny        # CPU smoke run

TFLOP/s counts model FLOPs (matmuls and attention of forward and backward, not the
recomputation of checkpointing), so modes compare by time for the same work: forward is
2 S 12 h^2 per layer for the projections and 4 S^2 h for attention; backward doubles both, except
that frozen base weights (LoRA) need no weight gradients.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import mean_std, peak_gib, print_header, reset_peak_memory, synchronize  # noqa: E402
from cogvideox_sat.dtypes import DTYPES  # noqa: E402
from cogvideox_sat.models.attention import BACKENDS, attention  # noqa: E402
from cogvideox_sat.models.checkpoint_plan import AUTO  # noqa: E402
from cogvideox_sat.models.checkpointing import CHECKPOINT_MODES  # noqa: E402
from cogvideox_sat.models.geometry import token_grid  # noqa: E402
from cogvideox_sat.models.lora import mark_only_lora_trainable  # noqa: E402
from cogvideox_sat.models.tiny import shrink_config  # noqa: E402
from cogvideox_sat.registry import instantiate_from_config  # noqa: E402



@dataclass
class Result:
    name: str
    mode: str
    checkpoint: str
    backend: str
    seconds: float
    seconds_std: float
    peak_gib: float
    tflops: float
    trainable: int
    first_step: float = float("nan")  # the first warm-up step (includes compilation)
    graphs: int = 0  # compiled graphs (torch._dynamo unique_graphs)
    graph_breaks: int = 0


# ---- configuration ------------------------------------------------------------------------------
def network_config(paths: list[str]) -> dict[str, Any]:
    """`model.network_config` (or a bare `network_config` / target block) of the merged YAMLs."""
    cfg = OmegaConf.merge(*[OmegaConf.load(p) for p in paths])
    for path in ("model.network_config", "network_config"):
        node = OmegaConf.select(cfg, path)
        if node is not None:
            return OmegaConf.to_container(node, resolve=True)
    if "target" in cfg:
        return OmegaConf.to_container(cfg, resolve=True)
    raise SystemExit(f"no model.network_config in {paths}")


def shrink(cfg: dict[str, Any]) -> dict[str, Any]:
    """Tiny CPU version of `cfg`: same variant (positions, patches, I2V, ofs), toy sizes."""
    cfg = shrink_config(cfg)
    p = cfg["params"]
    p.update(num_frames=17, latent_height=8, latent_width=12)
    mods = p["modules"]
    if "lora_config" in mods:
        mods["lora_config"].setdefault("params", {})["r"] = 4
    return cfg


def with_lora(cfg: dict[str, Any], rank: int | None, full: bool, targets: list[str] | None) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    mods = cfg["params"]["modules"]
    if full:
        mods.pop("lora_config", None)
    elif rank is not None:
        mods["lora_config"] = {"target": "cogvideox_sat.models.LoraMixin", "params": {"r": rank, "lora_alpha": rank}}
    if targets and "lora_config" in mods:
        mods["lora_config"].setdefault("params", {})["target_modules"] = targets
    return cfg


# ---- inputs and FLOPs ---------------------------------------------------------------------------
def make_inputs(model, batch: int, frames: int, height: int, width: int, device, dtype) -> dict[str, torch.Tensor]:
    """Random latents of a `frames` x `height` x `width` clip (VAE: /4 time + 1, /8 space)."""
    pt, ph, pw = model.patch_size
    t = (frames - 1) // 4 + 1
    t = math.ceil(t / pt) * pt  # 1.5: pad the latent frames to the temporal patch
    h, w = height // 8 // ph * ph, width // 8 // pw * pw
    out_c = model.out_channels
    pos = model.mixins["pos_embed"]
    text_len = pos.text_length
    text_hidden = model.mixins["patch_embed"].text_proj.in_features
    kwargs = {
        "x": torch.randn(batch, t, out_c, h, w, device=device, dtype=dtype),
        "timesteps": torch.randint(0, 1000, (batch,), device=device).float(),
        "context": torch.randn(batch, text_len, text_hidden, device=device, dtype=dtype),
    }
    if model.in_channels != out_c:
        kwargs["concat_images"] = torch.randn(batch, t, model.in_channels - out_c, h, w, device=device, dtype=dtype)
    if model.ofs_embed_dim is not None:
        kwargs["ofs"] = torch.full((1,), 2.0, device=device)
    return kwargs


def sequence_length(model, kwargs: dict[str, torch.Tensor]) -> int:
    """Tokens per sample that the transformer's attention runs over for these forward kwargs (as
    make_inputs builds them): the text tokens (`context`'s length), then one token per latent patch,
    (T / pt) * (H / ph) * (W / pw) for latents `x` of shape (B, T, C, H, W). pt is the temporal
    patch: 2 latent frames per token in 1.5 models, 1 in 1.0 models. `concat_images` (I2V) adds
    channels, not tokens. Counted by the model's own `token_grid`, so it raises where the model
    would: latents that do not tile into patches."""
    return token_grid(kwargs["x"].shape, model.patch_size, text_length=kwargs["context"].shape[1]).total_tokens


def step_flops(model, kwargs: dict[str, torch.Tensor], frozen_base: bool) -> float:
    b, seq = kwargs["x"].shape[0], sequence_length(model, kwargs)
    hidden, layers = model.hidden_size, model.num_layers
    matmul = 2 * b * seq * 12 * hidden**2 * layers
    attn = 4 * b * seq**2 * hidden * layers
    return matmul * (2 if frozen_base else 3) + attn * 3


# ---- settings -----------------------------------------------------------------------------------
# `+fp8` / `+fp8row` in a setting: transformer_args.fp8's torchao recipe
FP8_EXTRAS = {"fp8": "tensorwise", "fp8row": "rowwise"}
# `+compile` / `+autotune`: transformer_args.compile true / max-autotune (checkpointing.COMPILE_MODES)
COMPILE_EXTRAS = {"compile": "default", "autotune": "max-autotune"}


@dataclass(frozen=True)
class Setting:
    """One of our lever combinations, written `MODE[+compile|+autotune][+BACKEND][+fp8|+fp8row]`; MODE is a
    checkpoint mode or `auto<GiB>` (checkpoint_mode auto with that activation budget, e.g. auto6)."""

    checkpoint: str
    compile: bool = False
    backend: str | None = None  # None: the run's --attention-backend
    fp8: str | None = None  # transformer_args.fp8 recipe; None: bf16 matmuls
    budget_gib: float | None = None  # checkpoint mode auto only
    compile_mode: str = "default"  # with compile: a COMPILE_EXTRAS value

    @property
    def mode_label(self) -> str:
        return f"{self.checkpoint}{self.budget_gib:g}" if self.checkpoint == AUTO else self.checkpoint

    @property
    def label(self) -> str:
        fp8 = [k for k, v in FP8_EXTRAS.items() if v == self.fp8]
        compiled = [self.compile_label] if self.compile else []
        return "+".join([self.mode_label] + compiled + ([self.backend] if self.backend else []) + fp8)

    @property
    def compile_label(self) -> str:
        """The setting's word for its compile mode (`compile` or `autotune`)."""
        return next(k for k, v in COMPILE_EXTRAS.items() if v == self.compile_mode)


def parse_mode(spec: str, mode: str) -> tuple[str, float | None]:
    """A setting's MODE -> (checkpoint mode, auto's budget in GiB)."""
    if mode in CHECKPOINT_MODES:
        return mode, None
    if mode.startswith(AUTO):
        try:
            budget = float(mode[len(AUTO) :])
        except ValueError:
            budget = float("nan")
        if budget > 0:
            return AUTO, budget
    raise argparse.ArgumentTypeError(f"{spec!r}: checkpoint mode must be one of {CHECKPOINT_MODES} or auto<GiB> (e.g. auto6)")


def parse_setting(spec: str) -> Setting:
    mode, *extras = spec.split("+")
    mode, budget = parse_mode(spec, mode)
    compile_, compile_mode, backend, fp8 = False, "default", None, None
    for extra in extras:
        if extra in COMPILE_EXTRAS:
            compile_, compile_mode = True, COMPILE_EXTRAS[extra]
        elif extra in BACKENDS:
            backend = extra
        elif extra in FP8_EXTRAS:
            fp8 = FP8_EXTRAS[extra]
        else:
            raise argparse.ArgumentTypeError(
                f"{spec!r}: {extra!r} is neither {' / '.join(COMPILE_EXTRAS)}, an attention backend {BACKENDS} nor an FP8 recipe {tuple(FP8_EXTRAS)}"
            )
    return Setting(mode, compile_, backend, fp8, budget, compile_mode)


def build_ours(cfg, setting: Setting, device, dtype, default_backend: str, compile_backend: str = "inductor"):
    """Our DiT for `setting` in train mode, LoRA-only trainable when it has adapters."""
    if setting.fp8:  # a construction-time option (the projections are swapped when the model is built)
        cfg = copy.deepcopy(cfg)
        cfg["params"]["transformer_args"]["fp8"] = setting.fp8
    with torch.device(device):
        model = instantiate_from_config(cfg)
    model.to(dtype).train()
    model.set_checkpoint_mode(setting.checkpoint, setting.budget_gib)
    model.set_attention_backend(setting.backend or default_backend)
    model.set_compile(setting.compile, compile_backend, setting.compile_mode)
    lora = "lora" in model.mixins
    trainable = mark_only_lora_trainable(model) if lora else sum(p.numel() for p in model.parameters())
    return model, trainable


# ---- measurement --------------------------------------------------------------------------------
def measuring_device(tiny: bool) -> torch.device:
    """The CPU for a --tiny smoke run, else the GPU (a clear exit without one)."""
    if tiny:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --tiny for a CPU smoke run")
    return torch.device("cuda")


def measure(step, device: torch.device, warmup: int, steps: int) -> tuple[list[float], float, float]:
    """Run `step` warmup + steps times: (timed seconds, first step's seconds, peak GiB of the timed steps)."""
    first = float("nan")
    for i in range(warmup):
        start = time.perf_counter()
        step()
        synchronize(device)
        if i == 0:
            first = time.perf_counter() - start
    reset_peak_memory(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times, first, peak_gib(device)


def release(device: torch.device) -> None:
    """Free what a case left behind: compiled graphs (so the next model compiles with its own
    static shapes) and cached GPU blocks (so its peak memory is its own)."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_case(cfg, args, device, dtype, checkpoint: Setting | str) -> Result:
    setting = checkpoint if isinstance(checkpoint, Setting) else parse_setting(checkpoint)
    from torch._dynamo.utils import counters

    counters.clear()
    model, trainable = build_ours(cfg, setting, device, dtype, args.attention_backend, args.compile_backend)
    lora = "lora" in model.mixins
    kwargs = make_inputs(model, args.batch, args.frames, args.height, args.width, device, dtype)

    def step() -> None:
        out = model(**kwargs)
        out.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    times, first, peak = measure(step, device, args.warmup, args.steps)
    mean, std = mean_std(times)
    r = model.get_mixin("lora").r if lora else 0
    result = Result(
        name=Path(args.config[-1]).stem,
        mode=f"LoRA r{r}" if lora else "full",
        checkpoint=setting.mode_label + (f"+{setting.compile_label}" if setting.compile else ""),
        backend=setting.backend or args.attention_backend,
        seconds=mean,
        seconds_std=std,
        peak_gib=peak,
        tflops=step_flops(model, kwargs, frozen_base=lora) / mean / 1e12,
        trainable=trainable,
        first_step=first,
        graphs=counters["stats"]["unique_graphs"],
        graph_breaks=sum(counters["graph_break"].values()),
    )
    del model, kwargs
    release(device)
    return result


def check_attention(cfg, args, device, dtype) -> None:
    """Each SDPA backend at this config's attention shape: error vs float32 math, fwd+bwd time."""
    p = cfg["params"]
    heads, hidden = p["num_attention_heads"], p["hidden_size"]
    with torch.device("meta"):
        probe = instantiate_from_config(cfg)
    kwargs = make_inputs(probe, args.batch, args.frames, args.height, args.width, "meta", dtype)
    b, seq = kwargs["x"].shape[0], sequence_length(probe, kwargs)
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(b, heads, seq, hidden // heads, device=device, generator=gen) for _ in range(3))
    grad = torch.randn(b, heads, seq, hidden // heads, device=device, generator=gen)
    ref = torch.cat([attention(q[:, :, i : i + 1024], k, v, backend="math") for i in range(0, seq, 1024)], dim=2)
    print(f"\nattention {b}x{heads}x{seq}x{hidden // heads} ({str(dtype).split('.')[-1]}), error vs float32 math:")
    print(f"{'backend':<10} {'max abs err':>12} {'rel err':>10} {'fwd+bwd ms':>11}")
    for backend in BACKENDS:
        if backend == "math" and seq > 4096:
            print(f"{backend:<10} skipped: materialises {b * heads * seq * seq * 2 / 2**30:.0f} GiB of scores")
            continue
        qs, ks, vs = (x.to(dtype).requires_grad_() for x in (q, k, v))
        try:
            out = attention(qs, ks, vs, backend=backend)
            out.backward(grad.to(dtype))
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                attention(qs, ks, vs, backend=backend).backward(grad.to(dtype))
            synchronize(device)
            ms = (time.perf_counter() - start) / args.steps * 1e3
        except RuntimeError as err:
            print(f"{backend:<10} unavailable: {str(err).splitlines()[0][:80]}")
            continue
        err_abs = (out.float() - ref).abs().max().item()
        print(f"{backend:<10} {err_abs:>12.3e} {err_abs / ref.abs().max().item():>10.3e} {ms:>11.2f}")


def print_table(results: list[Result], args) -> None:
    print(f"\nDiT forward+backward, batch {args.batch}, clip {args.frames}x{args.height}x{args.width}, {args.dtype}, no optimizer step")
    header = (
        f"{'config':<24} {'mode':<10} {'ckpt':<26} {'attn':<7} {'step s':>12} {'peak GiB':>9} {'TFLOP/s':>8} {'trainable':>14}"
        f" {'1st step s':>10} {'graphs':>6}"
    )
    print_header(header)
    for r in results:
        step = f"{r.seconds:.3f}+-{r.seconds_std:.3f}"
        peak = "-" if math.isnan(r.peak_gib) else f"{r.peak_gib:.1f}"
        graphs = f"{r.graphs}" + (f" ({r.graph_breaks} breaks)" if r.graph_breaks else "") if r.graphs else "-"
        print(
            f"{r.name:<24} {r.mode:<10} {r.checkpoint:<26} {r.backend:<7} {step:>12} {peak:>9} {r.tflops:>8.1f} {r.trainable:>14,}"
            f" {r.first_step:>10.1f} {graphs:>6}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="+", help="YAML(s) with model.network_config (merged left to right)")
    parser.add_argument("--full", action="store_true", help="drop lora_config: full fine-tuning")
    parser.add_argument("--lora-rank", type=int, default=None, help="add/override LoRA with this rank (alpha = rank)")
    parser.add_argument("--lora-targets", nargs="+", default=None, help="LoRA target_modules (e.g. add mlp.dense_h_to_4h)")
    parser.add_argument("--checkpoint", nargs="+", type=parse_setting, default=[Setting("full")], metavar="MODE[+compile|+autotune][+BACKEND]")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of +compile settings (aot_eager: CPU smoke)")
    parser.add_argument("--attention-backend", default="auto", choices=BACKENDS)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--check-attention", action="store_true", help="also compare SDPA backends at this shape")
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU (smoke test)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    cfg = with_lora(network_config(args.config), args.lora_rank, args.full, args.lora_targets)
    if args.tiny:
        cfg = shrink(cfg)
        args.frames, args.height, args.width, args.steps, args.warmup = 13, 64, 96, 2, 1
        args.dtype = "fp32" if args.dtype == "fp16" else args.dtype
    device = measuring_device(args.tiny)
    dtype = DTYPES[args.dtype]
    cfg["params"]["dtype"] = args.dtype  # as the official engine injects it
    results = [run_case(cfg, args, device, dtype, mode) for mode in args.checkpoint]
    print_table(results, args)
    if args.check_attention:
        check_attention(cfg, args, device, dtype)
    return results


if __name__ == "__main__":
    main()

"""`checkpoint_mode: auto` against the GPU: what the plan predicts beside what the step measures.

For each activation budget (GiB) this prints the per-layer plan that `checkpoint_plan` makes at
the step's shape, its predicted kept activations and recompute saving, and the measured step
(forward + backward, random weights, no optimizer, via dit_step.run_case). The uniform modes run
too, as the plan's calibration points. Everything is shown against `full`, since the plan counts
only what the layers keep; weights, gradients and the embeddings' activations are in every peak:

    predicted extra = kept(plan) - kept(all full)        measured extra = peak - peak(full)
    predicted saved = recompute seconds the plan avoids   measured saved = step(full) - step

    python benchmarks/checkpoint_auto.py configs/cogvideox_2b.yaml --lora-rank 128 --budgets 4 6 8 12 --extras compile
    python benchmarks/checkpoint_auto.py configs/cogvideox_2b.yaml --tiny      # CPU smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dit_step  # noqa: E402
from common import print_header  # noqa: E402
from cogvideox_sat.models.checkpoint_plan import AUTO, GIB, LayerShape, plan_checkpointing  # noqa: E402
from cogvideox_sat.models.checkpointing import CHECKPOINT_MODES  # noqa: E402
from cogvideox_sat.registry import instantiate_from_config  # noqa: E402


def layer_shape(cfg, args, dtype: torch.dtype) -> tuple[LayerShape, int]:
    """The shape `DiffusionTransformer` plans for at this input (built on the meta device), and its layer count."""
    with torch.device("meta"):
        probe = instantiate_from_config(cfg)
    kwargs = dit_step.make_inputs(probe, args.batch, args.frames, args.height, args.width, "meta", dtype)
    b, seq = kwargs["x"].shape[0], dit_step.sequence_length(probe, kwargs)
    shape = LayerShape(probe.hidden_size, probe.num_attention_heads, b, seq, torch.empty((), dtype=dtype).element_size(), "lora" in probe.mixins)
    return shape, probe.num_layers


def predicted(shape: LayerShape, layers: int, setting: dit_step.Setting) -> tuple[str, float, float]:
    """(plan, kept bytes, recompute seconds saved against full) of a setting."""
    if setting.checkpoint == AUTO:
        plan = plan_checkpointing(shape, layers, setting.budget_gib)
        counts = " ".join(f"{plan.modes.count(m)} {m}" for m in CHECKPOINT_MODES if m in plan.modes)
        return counts + ("" if plan.fits else " (over budget)"), plan.kept_bytes, plan.saved_s
    kept, saved = shape.mode_costs()[setting.checkpoint]
    return f"{layers} {setting.checkpoint}", layers * kept, layers * saved


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="+", help="YAML(s) with model.network_config (merged left to right)")
    parser.add_argument("--full", action="store_true", help="drop lora_config: full fine-tuning")
    parser.add_argument("--lora-rank", type=int, default=None, help="add/override LoRA with this rank (alpha = rank)")
    parser.add_argument("--budgets", nargs="+", type=float, default=[4.0, 8.0, 16.0], help="checkpoint_budget_gib values to plan and run")
    parser.add_argument("--modes", nargs="+", default=["full", "selective", "none"], choices=CHECKPOINT_MODES,
                        help="uniform modes run beside the plans (full is always run: the reference)")
    parser.add_argument("--extras", default="", help="setting extras for every case, e.g. compile or compile+fa4 (see dit_step)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--attention-backend", default="auto")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="bf16", choices=sorted(dit_step.DTYPES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU (smoke test; aot_eager compile)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    cfg = dit_step.with_lora(dit_step.network_config(args.config), args.lora_rank, args.full, None)
    if args.tiny:
        cfg = dit_step.shrink(cfg)
        args.frames, args.height, args.width, args.steps, args.warmup = 13, 64, 96, 1, 1
        args.compile_backend = "aot_eager"
    device = dit_step.measuring_device(args.tiny)
    dtype = dit_step.DTYPES[args.dtype]
    cfg["params"]["dtype"] = args.dtype
    shape, layers = layer_shape(cfg, args, dtype)
    if args.tiny:  # the toy layers keep kilobytes: budgets between all-full and all-none
        full = layers * shape.mode_costs()["full"][0] / GIB
        args.budgets = [full * k for k in (1.6, 8.0, 20.0)]
    extras = f"+{args.extras}" if args.extras else ""
    modes = ["full"] + [m for m in args.modes if m != "full"]
    settings = [dit_step.parse_setting(m + extras) for m in modes] + [dit_step.parse_setting(f"{AUTO}{b:.3g}{extras}") for b in args.budgets]
    rows = []
    for setting in settings:
        plan, kept, saved = predicted(shape, layers, setting)
        result = dit_step.run_case(cfg, args, device, dtype, setting)
        rows.append({"setting": setting.label, "plan": plan, "kept_gib": kept / GIB, "saved_s": saved, "seconds": result.seconds, "peak_gib": result.peak_gib})
    print_table(rows, shape, args)
    return rows


def print_table(rows: list[dict], shape: LayerShape, args) -> None:
    ref = rows[0]  # full
    print(f"\ncheckpoint_mode auto, {' '.join(args.config)}, {args.frames}x{args.height}x{args.width}, batch {args.batch}, "
          f"{shape.seq_len} tokens, hidden {shape.hidden_size}, {'LoRA' if shape.lora else 'full'}, {args.dtype}")
    header = f"{'setting':<22} {'plan (layers)':<46} {'kept GiB':>8} {'extra pred':>10} {'peak GiB':>8} {'extra meas':>10} {'saved ms pred':>13} {'step s':>7} {'saved ms meas':>13}"
    print_header(header)
    for r in rows:
        peak = "-" if math.isnan(r["peak_gib"]) else f"{r['peak_gib']:.2f}"
        extra = "-" if math.isnan(r["peak_gib"]) else f"{r['peak_gib'] - ref['peak_gib']:.2f}"
        print(f"{r['setting']:<22} {r['plan']:<46} {r['kept_gib']:>8.3g} {r['kept_gib'] - ref['kept_gib']:>10.3g} {peak:>8} {extra:>10}"
              f" {r['saved_s'] * 1e3:>13.0f} {r['seconds']:>7.3f} {(ref['seconds'] - r['seconds']) * 1e3:>13.0f}")


if __name__ == "__main__":
    main()

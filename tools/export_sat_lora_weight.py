"""Export SAT LoRA adapters as a diffusers LoRA file that `pipe.load_lora_weights` applies exactly.

    python tools/export_sat_lora_weight.py --sat_pt_path runs/my-lora-run --lora_save_directory out/my-lora
    # then, in diffusers:  pipe.load_lora_weights("out/my-lora")

--sat_pt_path: a LoRA checkpoint, ours (adapters only) or SAT's (base + adapters): the run
folder (`latest`), an iteration folder or the mp_rank_00_model_states.pt file.
Names: query_key_value's three adapters -> attn1.to_q/to_k/to_v, attention.dense ->
attn1.to_out.0, and when trained mlp.dense_h_to_4h -> ff.net.0.proj, mlp.dense_4h_to_h ->
ff.net.2, under the `transformer.` prefix diffusers' loader selects by.
Scale: SAT multiplies the adapters by lora_alpha / r; diffusers would use 1 (alpha = r) for a
file without alpha, so the factor is folded into lora_B and the effect is identical. alpha comes
from --lora_alpha, else --config's lora_config, else the run's training_config.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cogvideox_sat.config import load_configs  # noqa: E402
from cogvideox_sat.io.diffusers_configs import ConversionError  # noqa: E402
from cogvideox_sat.io.diffusers_export import dit_part, read_state  # noqa: E402
from cogvideox_sat.io.diffusers_keys import sat_lora_to_diffusers  # noqa: E402
from cogvideox_sat.io.lora_state import lora_adapters, lora_params, lora_rank  # noqa: E402
from cogvideox_sat.io.run_folder import find_training_config  # noqa: E402
from cogvideox_sat.io.sat_checkpoint import ema_checkpoint_folder  # noqa: E402

WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # the name diffusers' loaders look for


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sat_pt_path", required=True, help="LoRA checkpoint: run folder, iteration folder or .pt file")
    p.add_argument("--lora_save_directory", required=True, help="folder to write the diffusers LoRA file into")
    p.add_argument("--config", nargs="+", help="SAT model config(s) with the lora_config the adapters were trained with")
    p.add_argument("--lora_alpha", type=float, help="LoRA alpha (overrides the config; SAT's default is 1)")
    p.add_argument("--weight_name", default=WEIGHT_NAME, help="file name inside --lora_save_directory")
    p.add_argument("--ema", action="store_true", help="export the EMA adapters (<latest>-ema) of the run folder --sat_pt_path")
    args = p.parse_args(argv)
    if args.ema:
        try:
            args.sat_pt_path = str(ema_checkpoint_folder(args.sat_pt_path))
        except FileNotFoundError as err:
            p.error(str(err))
    return args


def resolve_alpha(args: argparse.Namespace) -> tuple[float, str]:
    """(lora_alpha, where it came from)."""
    if args.lora_alpha is not None:
        return args.lora_alpha, "--lora_alpha"
    config = args.config or ([str(found)] if (found := find_training_config(args.sat_pt_path)) else None)
    if config:
        params = lora_params(load_configs(config).section("model").get("network_config", {}))
        if params is None:
            raise ConversionError(f"{', '.join(config)} has no network_config.params.modules.lora_config")
        return float(params["lora_alpha"]), ", ".join(config)
    raise ConversionError(
        "lora_alpha is not stored in the checkpoint: give --config <the training model yaml> or --lora_alpha "
        "(SAT's LoraMixin default is 1; the official configs set none, so 1 unless yours did)"
    )


def export(args: argparse.Namespace, loaded: dict | None = None) -> Path:
    """Write the LoRA file; `loaded`: the checkpoint's tensors when the caller has them already."""
    from diffusers import CogVideoXPipeline

    state, _ = dit_part(loaded if loaded is not None else read_state(args.sat_pt_path))
    adapters = lora_adapters(state)
    if not adapters:
        raise ConversionError(f"{args.sat_pt_path} holds no LoRA adapters (matrix_A / matrix_B); is it a LoRA run?")
    alpha, source = resolve_alpha(args)
    rank = lora_rank(adapters)
    lora = sat_lora_to_diffusers(adapters, lora_alpha=alpha)
    CogVideoXPipeline.save_lora_weights(args.lora_save_directory, transformer_lora_layers=lora, weight_name=args.weight_name)
    modules = sorted({k.split(".", 2)[2].rsplit(".lora_", 1)[0] for k in lora})
    print(f"{len(lora)} tensors, r {rank}, lora_alpha {alpha} ({source}): scale {alpha / rank:g} folded into lora_B")
    print(f"modules per block: {', '.join(modules)}")
    out = Path(args.lora_save_directory) / args.weight_name
    print(f"-> {out}  (pipe.load_lora_weights({str(Path(args.lora_save_directory))!r}))")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        export(args)
    except (ConversionError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

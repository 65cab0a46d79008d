"""Consolidate a DeepSpeed ZeRO-1/2/3 checkpoint, then write it as a state dict, SAT or diffusers.

    # consolidated bf16 safetensors (the official tool's output), or --fp32
    python tools/convert_weight_deepspeed2hf.py runs/my-run out/my-run-bf16
    # SAT layout (latest + <iter>/mp_rank_00_model_states.pt) for sample_video.py / convert_weight_sat2hf.py
    python tools/convert_weight_deepspeed2hf.py runs/my-run out/my-run-sat --to sat --fp32
    # diffusers: a transformer folder for a full fine-tune, a LoRA file for a LoRA run
    python tools/convert_weight_deepspeed2hf.py runs/my-run out/my-run-diffusers --to diffusers

Under ZeRO the fp32 master weights are split across the optimizer partitions; DeepSpeed's own
`get_fp32_state_dict_from_zero_checkpoint` reassembles them (no copy of zero_to_fp32 here).
`checkpoint_dir` is the run folder (tag from `latest`, or -t) or an iteration folder.
--to diffusers reads the architecture from --config, else the run's training_config.yaml, else
--version/--i2v (see convert_weight_sat2hf.py, whose conversion it runs).
Reading DeepSpeed files unpickles Python objects: convert only checkpoints you trust.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS.parent))

import torch  # noqa: E402

from cogvideox_sat.dtypes import DTYPES  # noqa: E402
from cogvideox_sat.io.diffusers_configs import ConversionError  # noqa: E402
from cogvideox_sat.io.diffusers_export import dit_part  # noqa: E402
from cogvideox_sat.io.lora_state import has_lora  # noqa: E402
from cogvideox_sat.io.run_folder import find_training_config  # noqa: E402
from cogvideox_sat.io.sat_writer import write_sat_checkpoint  # noqa: E402
from cogvideox_sat.io.zero_checkpoint import consolidate_zero_checkpoint, zero_tag_folder  # noqa: E402

WEIGHTS_PATTERN = "diffusion_pytorch_model{suffix}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint_dir", help="run folder (with `latest`) or iteration folder")
    p.add_argument("output_dir", help="folder to write into")
    p.add_argument("-t", "--tag", help="iteration tag (default: `latest`)")
    p.add_argument("--to", choices=["state_dict", "sat", "diffusers"], default="state_dict", help="output format")
    precision = p.add_mutually_exclusive_group()
    for name in DTYPES:
        precision.add_argument(f"--{name}", dest="dtype", action="store_const", const=name, help=f"write {name} tensors")
    p.set_defaults(dtype="bf16")
    p.add_argument("--max_shard_size", default="5GB", help="largest shard (state_dict and diffusers outputs)")
    p.add_argument(
        "--safe_serialization", action=argparse.BooleanOptionalAction, default=True, help="--to state_dict: safetensors (default) or torch .bin"
    )
    p.add_argument("--exclude_frozen_parameters", action="store_true", help="leave out frozen parameters that were saved")
    p.add_argument("-d", "--debug", action="store_true", help="print every tensor written")
    p.add_argument("--config", nargs="+", help="--to diffusers: SAT model config(s) (default: the run's training_config.yaml)")
    p.add_argument("--version", choices=["1.0", "1.5"], help="--to diffusers without a config: CogVideoX version")
    p.add_argument("--i2v", action="store_true", help="--to diffusers without a config: image-to-video")
    p.add_argument("--lora_alpha", type=float, help="--to diffusers of a LoRA run: alpha, when no config says it")
    return p.parse_args(argv)


def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_state_dict(state: dict[str, torch.Tensor], out: Path, args: argparse.Namespace) -> None:
    """The official output: engine keys in diffusion_pytorch_model[-0000i-of-0000n].safetensors
    (+ index when sharded)."""
    from huggingface_hub import save_torch_state_dict

    suffix = ".safetensors" if args.safe_serialization else ".bin"
    out.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(
        state,
        str(out),
        filename_pattern=WEIGHTS_PATTERN + suffix,
        max_shard_size=args.max_shard_size,
        safe_serialization=args.safe_serialization,
    )


def write_diffusers(state: dict[str, torch.Tensor], out: Path, args: argparse.Namespace) -> None:
    """Full fine-tune -> transformer/ + scheduler/; LoRA run -> a diffusers LoRA file."""
    run, _ = zero_tag_folder(args.checkpoint_dir, args.tag)
    config = args.config or ([str(found)] if (found := find_training_config(run)) else None)
    dit, _ = dit_part(state)
    if has_lora(dit) and not any(k.endswith("attention.query_key_value.weight") for k in dit):
        export = load_tool("export_sat_lora_weight")
        argv = ["--sat_pt_path", str(run), "--lora_save_directory", str(out)]
        argv += ["--config", *config] if config else []
        argv += ["--lora_alpha", str(args.lora_alpha)] if args.lora_alpha is not None else []
        dtype = DTYPES[args.dtype]
        export.export(export.parse_args(argv), loaded={k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
        return
    sat2hf = load_tool("convert_weight_sat2hf")
    argv = ["--output_path", str(out), "--max_shard_size", args.max_shard_size]
    argv += ["--config", *config] if config else ["--version", args.version or "1.0"] + (["--i2v"] if args.i2v else [])
    argv += {"fp16": ["--fp16"], "bf16": ["--bf16"], "fp32": []}[args.dtype]
    sat2hf.convert(sat2hf.parse_args(argv), loaded=state)


def convert(args: argparse.Namespace) -> None:
    out = Path(args.output_dir)
    dtype = DTYPES[args.dtype]
    # 1. fp32 masters from the optimizer partitions (DeepSpeed's API), then the output precision
    state = consolidate_zero_checkpoint(args.checkpoint_dir, args.tag, torch.float32, args.exclude_frozen_parameters)
    print(f"consolidated {len(state)} tensors ({sum(v.numel() for v in state.values()):,} values) from {args.checkpoint_dir}")
    if args.debug:
        for key, value in state.items():
            print(f"  {key} {tuple(value.shape)}")
    if args.to == "diffusers":
        write_diffusers(state, out, args)  # casts itself (the VAE stays float32)
        return
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    # 2. the chosen layout
    if args.to == "sat":
        _, tag = zero_tag_folder(args.checkpoint_dir, args.tag)
        path = write_sat_checkpoint(state, out, iteration=tag)
        print(f"-> {path} ({args.dtype}; {out}/latest = {tag})")
    else:
        write_state_dict(state, out, args)
        print(f"-> {out}/{WEIGHTS_PATTERN.format(suffix='')}* ({args.dtype})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        convert(args)
    except (ConversionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Convert SAT CogVideoX weights to diffusers: transformer, VAE, and with a T5 a whole pipeline.

    # a fine-tune of ours (its training_config.yaml is found and used)
    python tools/convert_weight_sat2hf.py --transformer_ckpt_path runs/my-run \\
        --output_path out/my-run-diffusers
    # released weights and a complete CogVideoXPipeline folder
    python tools/convert_weight_sat2hf.py --config configs/cogvideox_2b.yaml \\
        --transformer_ckpt_path CogVideoX-2b-sat/transformer --vae_ckpt_path CogVideoX-2b-sat/vae/3d-vae.pt \\
        --text_encoder_path checkpoints/t5-v1_1-xxl --output_path out/cogvideox-2b --fp16

The official flags work as before (--version 1.0/1.5, --i2v, --num_layers, --num_attention_heads,
--use_rotary_positional_embeddings, --scaling_factor, --snr_shift_scale, --fp16/--bf16,
--text_encoder_cache_dir, --typecast_text_encoder). With --config the architecture, VAE scale
and noise schedule are read from the SAT model config instead, so checkpoints of any size
convert; a checkpoint of another variant, or a --version/--i2v that contradicts the config, is
an error that says what differs. Full fine-tunes that also carry first_stage_model.* and
conditioner.* convert (the DiT is taken; --vae_ckpt_path may point at the same checkpoint).
A LoRA checkpoint is merged first: SAT's (original.weight + adapters) directly, ours (adapters
only) with --lora_ckpt_path over the base given as --transformer_ckpt_path.

Output: <output_path>/{transformer,vae,scheduler}/ (and text_encoder/, tokenizer/ with a T5),
plus model_index.json when all five are there, loadable with
CogVideoX(ImageToVideo)Pipeline.from_pretrained(output_path). Nothing is downloaded or uploaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from cogvideox_sat.config import load_configs  # noqa: E402
from cogvideox_sat.dtypes import precision_from_flags  # noqa: E402
from cogvideox_sat.io.diffusers_configs import (  # noqa: E402
    MODEL_PRESETS,
    ConversionError,
    build_dit_on_meta,
    cogvideox_version,
    is_image_to_video,
    scheduler_config,
)
from cogvideox_sat.io.diffusers_export import (  # noqa: E402
    convert_transformer,
    convert_vae,
    dit_part,
    read_state,
    save_component,
    vae_part,
    write_model_index,
)
from cogvideox_sat.io.lora_state import has_lora, lora_params, merge_lora_state  # noqa: E402
from cogvideox_sat.io.run_folder import find_training_config  # noqa: E402
from cogvideox_sat.io.sat_checkpoint import ema_weights  # noqa: E402
from cogvideox_sat.io.zero_checkpoint import is_zero_checkpoint  # noqa: E402

T5_ID = "google/t5-v1_1-xxl"
BASE_QKV = ("attention.query_key_value.weight", "attention.query_key_value.original.weight")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--transformer_ckpt_path", help="SAT transformer: folder with `latest`, iteration folder, .pt or .safetensors")
    p.add_argument("--vae_ckpt_path", help="SAT VAE: 3d-vae.pt, or a full fine-tune checkpoint carrying first_stage_model.*")
    p.add_argument("--output_path", required=True, help="folder to write the diffusers components into")
    p.add_argument("--config", nargs="+", help="SAT model config(s) (--base files); default: the run's training_config.yaml if found")
    p.add_argument("--version", choices=["1.0", "1.5"], help="CogVideoX version (default 1.0 without --config)")
    p.add_argument("--i2v", action="store_true", help="image-to-video model")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="save the transformer in fp16")
    precision.add_argument("--bf16", action="store_true", help="save the transformer in bf16")
    p.add_argument("--num_layers", type=int, help="without --config: override the preset's layer count")
    p.add_argument("--num_attention_heads", type=int, help="without --config: override the preset's heads (64 dims each)")
    p.add_argument("--use_rotary_positional_embeddings", action="store_true", help="without --config: 1.0 RoPE model (5B)")
    p.add_argument("--scaling_factor", type=float, help="VAE latent scale (default: the config's scale_factor)")
    p.add_argument("--snr_shift_scale", type=float, help="scheduler SNR shift (default: the config's shift_scale)")
    p.add_argument("--scheduler", choices=["ddim", "dpm"], default="ddim", help="CogVideoXDDIMScheduler or CogVideoXDPMScheduler")
    p.add_argument("--lora_ckpt_path", help="LoRA-only checkpoint (ours) merged into --transformer_ckpt_path before converting")
    p.add_argument("--lora_alpha", type=float, help="LoRA alpha for merging (default: the config's lora_config)")
    p.add_argument("--text_encoder_path", help="local T5 folder (e.g. checkpoints/t5-v1_1-xxl) for text_encoder/ and tokenizer/")
    p.add_argument("--tokenizer_path", help="local tokenizer folder (default: --text_encoder_path)")
    p.add_argument("--text_encoder_cache_dir", help=f"Hugging Face cache holding {T5_ID} (read offline)")
    p.add_argument("--typecast_text_encoder", action="store_true", help="save the T5 in --fp16/--bf16 too")
    p.add_argument("--max_shard_size", default="5GB", help="largest safetensors shard")
    p.add_argument("--push_to_hub", action="store_true", help="not supported: upload the folder yourself")
    p.add_argument("--ema", action="store_true", help="convert the EMA weights (<latest>-ema) of the run folder: --lora_ckpt_path if given, else --transformer_ckpt_path (or pass the <run>/<n>-ema folder itself)")
    args = p.parse_args(argv)
    if args.ema:
        try:
            args.transformer_ckpt_path, args.lora_ckpt_path = ema_weights(args.transformer_ckpt_path, args.lora_ckpt_path, True)
        except FileNotFoundError as err:
            p.error(str(err))
    return args


def model_section(args: argparse.Namespace) -> tuple[dict[str, Any], str, bool]:
    """(the SAT `model:` section to convert into, how to name it in messages, whether it came
    from a config file: then flags that contradict it are errors, not overrides)."""
    config = args.config
    architecture_flags = args.num_layers or args.num_attention_heads or args.use_rotary_positional_embeddings
    if not config and args.transformer_ckpt_path and not architecture_flags:
        found = find_training_config(args.transformer_ckpt_path)
        config = [str(found)] if found else None
    if config:
        if architecture_flags:
            raise ConversionError("--num_layers/--num_attention_heads/--use_rotary_positional_embeddings are read from --config; drop them")
        section = load_configs(config).section("model")
        if "network_config" not in section:
            raise ConversionError(f"{', '.join(config)}: no model.network_config")
        return section, f"the model of {', '.join(config)}", True
    version = args.version or "1.0"
    rope = args.use_rotary_positional_embeddings or args.i2v or version == "1.5"
    preset = MODEL_PRESETS[(version, args.i2v, rope)]  # official flags without --config
    section = load_configs([REPO / "configs" / preset]).section("model")
    params = section["network_config"]["params"]
    if args.num_layers:
        params["num_layers"] = args.num_layers
    if args.num_attention_heads:
        params["num_attention_heads"] = args.num_attention_heads
        params["hidden_size"] = 64 * args.num_attention_heads
    if args.scaling_factor is not None:
        section["scale_factor"] = args.scaling_factor
    if args.snr_shift_scale is not None:
        disc = section["denoiser_config"]["params"]["discretization_config"]
        disc.setdefault("params", {})["shift_scale"] = args.snr_shift_scale
    rope_flag = " --use_rotary_positional_embeddings" if rope and not args.i2v and version == "1.0" else ""
    return section, f"--version {version}{' --i2v' if args.i2v else ''}{rope_flag} (configs/{preset})", False


def check_flags(args: argparse.Namespace, model: torch.nn.Module, what: str) -> None:
    """--version / --i2v given with --config must agree with it."""
    version, i2v = cogvideox_version(model), is_image_to_video(model)
    if args.version and args.version != version:
        raise ConversionError(f"--version {args.version}, but {what} is a CogVideoX {version} model (temporal patch {model.patch_size[0]})")
    if args.i2v and not i2v:
        raise ConversionError(f"--i2v, but {what} is a text-to-video model (in_channels {model.in_channels} = out_channels)")


def transformer_state(
    args: argparse.Namespace, network: dict[str, Any], loaded: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The plain SAT DiT state dict to convert (from `loaded`, else --transformer_ckpt_path):
    LoRA merged, other sub-models dropped."""
    if loaded is None and is_zero_checkpoint(args.transformer_ckpt_path):
        print("note: a ZeRO checkpoint; this reads its module copy (training precision). "
              "tools/convert_weight_deepspeed2hf.py --to diffusers converts the fp32 master weights")
    state, others = dit_part(loaded if loaded is not None else read_state(args.transformer_ckpt_path))
    if others:
        print("ignored (not the transformer): " + ", ".join(f"{p}* ({n} tensors)" for p, n in sorted(others.items())))
    if args.lora_ckpt_path:
        adapters, _ = dit_part(read_state(args.lora_ckpt_path))
        state = {**state, **{k: v for k, v in adapters.items() if ".matrix_" in k}}
    if not has_lora(state):
        return state
    if not any(k.endswith(BASE_QKV) for k in state):
        raise ConversionError(
            f"{args.transformer_ckpt_path} holds only LoRA adapters: export them with tools/export_sat_lora_weight.py, "
            "or merge them here with --transformer_ckpt_path <base model> --lora_ckpt_path <this checkpoint>"
        )
    alpha = lora_alpha(args, network)
    print(f"merging LoRA adapters (lora_alpha {alpha})")
    return merge_lora_state(state, alpha)


def lora_alpha(args: argparse.Namespace, network: dict[str, Any]) -> float:
    """--lora_alpha, else the model config's lora_config, else the LoRA run's training_config.yaml."""
    if args.lora_alpha is not None:
        return float(args.lora_alpha)
    params = lora_params(network)
    if params is None and args.lora_ckpt_path and (found := find_training_config(args.lora_ckpt_path)):
        params = lora_params(load_configs([found]).section("model")["network_config"])
    if params is None:
        raise ConversionError("the checkpoint holds LoRA adapters: give --lora_alpha (SAT's default is 1) or a --config with lora_config")
    return float(params["lora_alpha"])


def text_length(section: dict[str, Any], network: torch.nn.Module) -> int:
    """The T5 max_length the model was trained with (tokenizer model_max_length)."""
    for emb in (section.get("conditioner_config") or {}).get("params", {}).get("emb_models", []) or []:
        if str(emb.get("target", "")).endswith("FrozenT5Embedder"):
            return int((emb.get("params") or {}).get("max_length", 77))
    return int(network.mixins["pos_embed"].text_length)


def write_text_encoder(args: argparse.Namespace, out: Path, max_length: int, dtype: torch.dtype) -> None:
    from transformers import T5EncoderModel, T5Tokenizer

    source = args.text_encoder_path or T5_ID
    offline = {"cache_dir": args.text_encoder_cache_dir, "local_files_only": True}
    tokenizer = T5Tokenizer.from_pretrained(args.tokenizer_path or source, model_max_length=max_length, **offline)
    tokenizer.save_pretrained(out / "tokenizer")
    encoder = T5EncoderModel.from_pretrained(source, **offline)
    if args.typecast_text_encoder:
        encoder.to(dtype)
    for param in encoder.parameters():  # safetensors refuses non-contiguous tensors
        param.data = param.data.contiguous()
    encoder.save_pretrained(out / "text_encoder", safe_serialization=True, max_shard_size=args.max_shard_size)
    print(f"text encoder and tokenizer from {source} -> {out}/text_encoder, {out}/tokenizer")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return convert(args)
    except (ConversionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def convert(args: argparse.Namespace, loaded: dict[str, torch.Tensor] | None = None) -> int:
    """Run the conversion; `loaded`: the transformer checkpoint's tensors when the caller has
    them already (a consolidated ZeRO checkpoint), instead of --transformer_ckpt_path."""
    if args.push_to_hub:
        raise ConversionError("--push_to_hub is not supported: upload --output_path yourself (huggingface-cli upload)")
    has_transformer = bool(args.transformer_ckpt_path) or loaded is not None
    if not (has_transformer or args.vae_ckpt_path or args.text_encoder_path or args.text_encoder_cache_dir):
        raise ConversionError("nothing to convert: give --transformer_ckpt_path, --vae_ckpt_path and/or a T5")
    dtype, _ = precision_from_flags(args)
    out = Path(args.output_path)
    section, what, from_config = model_section(args)
    network = build_dit_on_meta(section["network_config"])
    check_flags(args, network, what)
    version, i2v = cogvideox_version(network), is_image_to_video(network)
    print(f"converting for {what}: CogVideoX {version} {'image' if i2v else 'text'}-to-video")

    # 1. Transformer and the scheduler of its training schedule
    if has_transformer:
        state = transformer_state(args, section["network_config"], loaded)
        source = str(args.transformer_ckpt_path or "the checkpoint")
        model = convert_transformer(state, section["network_config"], dtype, what, source=source)
        save_component(model, out / "transformer", args.max_shard_size)
        del model, state
        print(f"transformer -> {out}/transformer ({dtype}); note: diffusers' output norm eps is 1e-5 (SAT: 1e-6)")
        name, sched = scheduler_config(section, args.scheduler, args.snr_shift_scale)
        import diffusers

        getattr(diffusers, name)(**sched).save_pretrained(str(out / "scheduler"))
        print(f"scheduler -> {out}/scheduler ({name}, snr_shift_scale {sched['snr_shift_scale']}, {sched['prediction_type']})")

    # 2. VAE, kept in float32 as diffusers' pipelines expect (they upcast it anyway)
    if args.vae_ckpt_path:
        scale = float(section.get("scale_factor", 1.0))
        if args.scaling_factor is not None and from_config and args.scaling_factor != scale:
            raise ConversionError(f"--scaling_factor {args.scaling_factor} disagrees with the config's scale_factor {scale}")
        vae_state = vae_part(read_state(args.vae_ckpt_path))
        vae = convert_vae(vae_state, section["first_stage_config"], scale, invert_scale_latents=version == "1.5")
        save_component(vae, out / "vae", args.max_shard_size)
        del vae, vae_state
        print(f"vae -> {out}/vae (float32, scaling_factor {scale})")

    # 3. T5, tokenizer and the pipeline index
    if args.text_encoder_path or args.text_encoder_cache_dir:
        write_text_encoder(args, out, text_length(section, network), dtype)
    components = ("transformer", "vae", "scheduler", "text_encoder", "tokenizer")
    if all((out / c).is_dir() for c in components):
        pipeline = "CogVideoXImageToVideoPipeline" if i2v else "CogVideoXPipeline"
        scheduler_class = _saved_class(out / "scheduler" / "scheduler_config.json")
        write_model_index(out, pipeline, scheduler_class)
        print(f"pipeline -> {out} ({pipeline}.from_pretrained)")
    else:
        print(f"no model_index.json: {out} lacks " + ", ".join(c for c in components if not (out / c).is_dir()))
    return 0


def _saved_class(config_json: Path) -> str:
    import json

    return json.loads(config_json.read_text())["_class_name"]


if __name__ == "__main__":
    sys.exit(main())

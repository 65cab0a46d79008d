"""Convert diffusers CogVideoX weights to the released SAT layout: transformer, VAE, T5 and LoRA.

    # a hub pipeline folder (transformer/, vae/, text_encoder/, tokenizer/ are found inside)
    python tools/convert_weight_hf2sat.py --transformer_path CogVideoX-5b --output_path CogVideoX-5b-sat
    # a diffusers fine-tune's transformer alone, plus a diffusers LoRA
    python tools/convert_weight_hf2sat.py --transformer_path my-ft/transformer --vae_path CogVideoX-5b/vae \\
        --lora_path my-lora/pytorch_lora_weights.safetensors --output_path my-ft-sat

The variant (2B, 5B, 5B-I2V, 1.5-5B, 1.5-5B-I2V, or any size of them) is read from the
transformer's config.json. Output (<output_path>/...):
  transformer/latest, transformer/1/mp_rank_00_model_states.pt  {"module": model.diffusion_model.*}
  vae/3d-vae.pt                                                 {"state_dict": encoder.*, decoder.*}
  t5-v1_1-xxl/                                                  encoder + tokenizer, as our conditioner loads them
  lora/latest, lora/1/mp_rank_00_model_states.pt                the adapters, as our LoRA runs save them
  <config>.yaml (and <config>_lora.yaml)                        the matching configs/*.yaml, paths filled in
Tensors keep their dtype unless --dtype (transformer and LoRA; the VAE stays as stored). Nothing
is written unless everything converts: the folder is assembled beside <output_path> and renamed.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402

from cogvideox_sat.config import load_configs  # noqa: E402
from cogvideox_sat.dtypes import DTYPES  # noqa: E402
from cogvideox_sat.io.diffusers_configs import (  # noqa: E402
    ConversionError,
    build_dit_on_meta,
    diffusers_preset,
    first_stage_from_diffusers,
    network_from_diffusers,
)
from cogvideox_sat.io.diffusers_import import (  # noqa: E402
    MODEL_INDEX,
    derived_tensors,
    read_lora,
    read_transformer,
    read_vae,
)
from cogvideox_sat.io.dit_variant import check_dit_checkpoint  # noqa: E402
from cogvideox_sat.io.sat_checkpoint import DIT_PREFIX  # noqa: E402
from cogvideox_sat.io.sat_writer import write_sat_checkpoint  # noqa: E402

T5_FOLDER = "t5-v1_1-xxl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--transformer_path", required=True, help="diffusers transformer folder, or a pipeline folder (model_index.json)")
    p.add_argument("--vae_path", help="diffusers VAE folder or pipeline folder (default: the pipeline's vae/)")
    p.add_argument("--text_encoder_path", help="T5 folder, or a pipeline folder (default: the pipeline's text_encoder/)")
    p.add_argument("--tokenizer_path", help="T5 tokenizer folder (default: beside the text encoder, or the pipeline's tokenizer/)")
    p.add_argument("--lora_path", help="diffusers LoRA: pytorch_lora_weights.safetensors or its folder (PEFT or kohya keys)")
    p.add_argument("--output_path", required=True, help="folder to create (must not exist or be empty)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="store the transformer and LoRA in this dtype (default: as read)")
    return p.parse_args(argv)


def pipeline_part(path: str | None, transformer_path: str, name: str) -> Path | None:
    """`path`, else the pipeline folder's `name`/ when --transformer_path is a pipeline."""
    if path:
        return Path(path)
    pipeline = Path(transformer_path)
    if (pipeline / MODEL_INDEX).is_file() and (pipeline / name).is_dir():
        return pipeline / name
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        convert(args)
    except (ConversionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def convert(args: argparse.Namespace) -> Path:
    out = Path(args.output_path).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"{out} exists and is not empty: choose a new --output_path")
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        names = write_all(args, work, out)
        if out.exists():
            out.rmdir()
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"-> {out}")
    for name in names:
        print(f"   python train_video.py --base configs/sft.yaml {out / name}        # the written file last: its args.load wins")
        print(f"   python sample_video.py --base configs/inference.yaml {out / name}")
    return out


def write_all(args: argparse.Namespace, work: Path, out: Path) -> list[str]:
    """Convert into `work`; paths inside the configs name `out` (where `work` is renamed to)."""
    dtype = DTYPES.get(args.dtype)

    # 1. Transformer: the variant from its config, checked against the tensors
    dit = read_transformer(args.transformer_path)
    config_json = dit.folder / "config.json"
    preset = diffusers_preset(dit.config)
    section = load_configs([REPO / "configs" / preset]).section("model")
    section["network_config"] = network_from_diffusers(dit.config, section["network_config"], str(config_json))
    model = build_dit_on_meta(section["network_config"])
    text_length = section["network_config"]["params"]["modules"]["pos_embed_config"]["params"]["text_length"]
    for emb in t5_embedders(section):  # the prompt length the model's tables were made for
        emb.setdefault("params", {})["max_length"] = text_length
    check_dit_checkpoint(dit.state, model.state_dict(), model.out_channels, f"the model of {config_json}", str(dit.folder))
    state = {**dit.state, **derived_tensors(model, dit.state)}
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    write_sat_checkpoint({DIT_PREFIX + k: v for k, v in state.items()}, work / "transformer", iteration=1)
    kinds = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    print(f"transformer: {dit.describe()} -> transformer/ ({len(state)} tensors, {', '.join(kinds)}; configs/{preset})")
    del state, dit

    # 2. VAE
    vae_path = pipeline_part(args.vae_path, args.transformer_path, "vae")
    if vae_path is not None:
        vae = read_vae(vae_path)
        stage = first_stage_from_diffusers(vae.config, section["first_stage_config"], str(vae.folder / "config.json"))
        stage["params"]["ckpt_path"] = str(out / "vae" / "3d-vae.pt")
        section["first_stage_config"] = stage
        section["scale_factor"] = float(vae.config.get("scaling_factor", section.get("scale_factor", 1.0)))
        (work / "vae").mkdir()
        torch.save({"state_dict": {k: v.contiguous() for k, v in vae.state.items()}}, work / "vae" / "3d-vae.pt")
        print(f"vae: {vae.describe()} -> vae/3d-vae.pt (scale_factor {section['scale_factor']})")
        del vae

    # 3. T5 encoder and tokenizer in one folder
    encoder = pipeline_part(args.text_encoder_path, args.transformer_path, "text_encoder")
    if encoder is not None:
        copy_t5(encoder, args.tokenizer_path, work / T5_FOLDER)
        for emb in t5_embedders(section):
            emb.setdefault("params", {})["model_dir"] = str(out / T5_FOLDER)
        print(f"text encoder: {encoder} -> {T5_FOLDER}/")

    # 4. Configs, and the LoRA with its own
    stem = preset.removesuffix(".yaml")
    write_config(work / f"{stem}.yaml", section, {"load": str(out / "transformer")}, preset)
    names = [f"{stem}.yaml"]
    if args.lora_path:
        lora_section = convert_lora(args, section, preset, work / "lora", dtype)
        write_config(work / f"{stem}_lora.yaml", lora_section, {"load": str(out / "transformer"), "lora_load": str(out / "lora")}, preset)
        names.append(f"{stem}_lora.yaml")
    return names


def convert_lora(args: argparse.Namespace, section: dict[str, Any], preset: str, folder: Path, dtype: torch.dtype | None) -> dict[str, Any]:
    """Write the adapters as our LoRA runs save them; returns the model section with lora_config."""
    lora = read_lora(args.lora_path)
    layers = sorted({int(k.split(".")[2]) for k in lora.adapters})
    lora_section = copy.deepcopy(section)
    template = load_configs([REPO / "configs" / preset.replace(".yaml", "_lora.yaml")]).section("model")
    params: dict[str, Any] = {"r": lora.rank, "lora_alpha": lora.alpha, "target_modules": lora.targets}
    if layers != list(range(section["network_config"]["params"]["num_layers"])):
        params["layer_range"] = layers
    modules = lora_section["network_config"]["params"]["modules"]
    modules["lora_config"] = {"target": template["network_config"]["params"]["modules"]["lora_config"]["target"], "params": params}
    lora_section["not_trainable_prefixes"] = template.get("not_trainable_prefixes", ["all"])

    expected = {k: v for k, v in build_dit_on_meta(lora_section["network_config"], keep_lora=True).state_dict().items() if ".matrix_" in k}
    missing = sorted(set(expected) - set(lora.adapters))
    wrong = sorted(k for k, v in lora.adapters.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape))
    if missing or wrong:
        listed = ", ".join((missing or wrong)[:6])
        raise ConversionError(f"{lora.file}: adapters do not fit the transformer ({'missing' if missing else 'of another shape'}: {listed})")
    adapters = {k: v.to(dtype) if dtype is not None else v for k, v in lora.adapters.items()}
    write_sat_checkpoint({DIT_PREFIX + k: v for k, v in adapters.items()}, folder, iteration=1)
    print(f"lora: {lora.file} -> lora/ ({len(adapters)} tensors, r {lora.rank}, lora_alpha {lora.alpha:g} from {lora.alpha_source}; "
          f"targets {', '.join(lora.targets)})")
    return lora_section


def t5_embedders(section: dict[str, Any]) -> list[dict[str, Any]]:
    models = (section.get("conditioner_config") or {}).get("params", {}).get("emb_models") or []
    return [emb for emb in models if str(emb.get("target", "")).endswith("FrozenT5Embedder")]


def copy_t5(encoder: Path, tokenizer: str | None, target: Path) -> None:
    """The encoder's files, then the tokenizer's (pipeline: tokenizer/ beside text_encoder/), in one folder."""
    if not (encoder / "config.json").is_file():
        raise ConversionError(f"{encoder}: no config.json (expected a transformers T5EncoderModel folder)")
    sources = [encoder]
    if tokenizer:
        sources.insert(0, Path(tokenizer))
    elif (encoder.parent / MODEL_INDEX).is_file() and (encoder.parent / "tokenizer").is_dir():
        sources.insert(0, encoder.parent / "tokenizer")
    target.mkdir()
    for source in sources:  # the encoder's config.json wins over a tokenizer's
        for file in source.iterdir():
            if file.is_file():
                shutil.copy2(file, target / file.name)
    if not any((target / name).is_file() for name in ("spiece.model", "tokenizer.json")):
        raise ConversionError(f"{encoder}: no T5 tokenizer (spiece.model / tokenizer.json) beside it; give --tokenizer_path")


def write_config(path: Path, section: dict[str, Any], run_args: dict[str, str], preset: str) -> None:
    header = (
        f"# Written by tools/convert_weight_hf2sat.py: configs/{preset} with the converted model's values and paths.\n"
        "# Give it after configs/sft.yaml / configs/inference.yaml: its args (load, lora_load) then win.\n"
    )
    path.write_text(header + yaml.safe_dump({"model": section, "args": run_args}, sort_keys=False))


if __name__ == "__main__":
    sys.exit(main())

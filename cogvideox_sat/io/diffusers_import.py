"""Read diffusers CogVideoX folders into SAT state dicts (the way in; `diffusers_export` is the way out).

A path is a model folder (`config.json` + `diffusion_pytorch_model.safetensors`, or shards
named by `diffusion_pytorch_model.safetensors.index.json`) or a pipeline folder
(`model_index.json`, the component in its sub-folder). Keys are renamed with the tables of
`diffusers_keys` / `diffusers_vae_keys` read backwards; tensors keep their dtype. diffusers
itself is not imported: safetensors and JSON are enough.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .diffusers_configs import ConversionError
from .diffusers_keys import diffusers_dit_to_sat, diffusers_lora_to_sat
from .diffusers_vae_keys import diffusers_vae_to_sat
from .dit_variant import LEGACY_TABLE, SINCOS_TABLE

TRANSFORMER_CLASS = "CogVideoXTransformer3DModel"
VAE_CLASS = "AutoencoderKLCogVideoX"
WEIGHTS = "diffusion_pytorch_model.safetensors"
INDEX = WEIGHTS + ".index.json"
MODEL_INDEX = "model_index.json"


@dataclass
class DiffusersComponent:
    """One diffusers model folder read into SAT keys."""

    folder: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # SAT keys, no engine prefix
    files: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.folder} (diffusers {self.config.get('_class_name')}, {len(self.files)} safetensors file(s), converted in memory)"


def component_folder(path: str | os.PathLike[str], component: str, expected_class: str) -> tuple[Path, dict[str, Any]]:
    """(model folder, its config) of `component` given a model or a pipeline folder; raises
    `ConversionError` naming the file when the folder is of another kind."""
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"{path} is not a folder (expected a diffusers {expected_class} or pipeline folder)")
    if (path / MODEL_INDEX).is_file():
        if not (path / component / "config.json").is_file():
            raise ConversionError(f"{path / MODEL_INDEX}: a pipeline folder without {component}/config.json")
        path = path / component
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{path}: neither a diffusers model folder (config.json) nor a pipeline folder ({MODEL_INDEX})")
    config = json.loads(config_file.read_text())
    found = config.get("_class_name")
    if found != expected_class:
        raise ConversionError(f"{config_file}: _class_name is {found!r}, expected {expected_class} (the {component} of a CogVideoX pipeline)")
    return path, config


def is_diffusers_transformer(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a diffusers CogVideoX transformer folder or a pipeline folder holding one."""
    try:
        component_folder(path, "transformer", TRANSFORMER_CLASS)
    except (ConversionError, ValueError, OSError):
        return False
    return True


def read_safetensors(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, key -> file) of a model folder, sharded or not. A shard the index names but
    the folder lacks is an error naming both."""
    from safetensors.torch import load_file

    if (folder / INDEX).is_file():
        weight_map: dict[str, str] = json.loads((folder / INDEX).read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise ConversionError(f"{folder / INDEX} names {', '.join(missing)}, missing from {folder}")
    elif (folder / WEIGHTS).is_file():
        files = [WEIGHTS]
    else:
        raise ConversionError(f"{folder}: no {WEIGHTS} and no {INDEX}")
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for name in files:
        for key, value in load_file(str(folder / name)).items():
            state[key], origin[key] = value, name
    return state, origin


def _renamed(convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], state: dict[str, torch.Tensor], origin: Mapping[str, str], folder: Path) -> dict[str, torch.Tensor]:
    try:
        return convert(state)
    except KeyError as err:
        message = err.args[0] if err.args else str(err)
        where = next((origin[k] for k in state if repr(k) in message), None)
        raise ConversionError(f"{folder / where if where else folder}: {message}") from err


def read_transformer(path: str | os.PathLike[str]) -> DiffusersComponent:
    """A diffusers transformer folder as a SAT DiT state dict (without the tables diffusers does
    not store: see `derived_tensors`)."""
    folder, config = component_folder(path, "transformer", TRANSFORMER_CLASS)
    state, origin = read_safetensors(folder)
    sat = _renamed(diffusers_dit_to_sat, state, origin, folder)
    return DiffusersComponent(folder, config, sat, sorted(set(origin.values())))


def read_vae(path: str | os.PathLike[str]) -> DiffusersComponent:
    """A diffusers VAE folder as a SAT `3d-vae.pt` state dict."""
    folder, config = component_folder(path, "vae", VAE_CLASS)
    state, origin = read_safetensors(folder)
    levels = len(config.get("block_out_channels") or []) or None
    sat = _renamed(lambda s: diffusers_vae_to_sat(s, levels), state, origin, folder)
    return DiffusersComponent(folder, config, sat, sorted(set(origin.values())))


def derived_keys(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> set[str]:
    """Keys of `model_state` that a converted diffusers `state` lacks by design (see `derived_tensors`)."""
    return {k for k in (LEGACY_TABLE, SINCOS_TABLE) if k in model_state and k not in state}


def derived_tensors(model_on_meta: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tables a SAT checkpoint holds but diffusers does not: the 2B sin-cos table (computed
    as the DiT computes it) and RoPE models' unused `transformer.position_embeddings` (zeros, as
    our DiT builds it; released files hold SAT's random init, which nothing reads). Stored in
    the dtype of `state`."""
    dtype = next(iter(state.values())).dtype
    expected = model_on_meta.state_dict()
    out: dict[str, torch.Tensor] = {}
    if LEGACY_TABLE in expected and LEGACY_TABLE not in state:
        out[LEGACY_TABLE] = torch.zeros(expected[LEGACY_TABLE].shape, dtype=dtype)
    if SINCOS_TABLE in expected and SINCOS_TABLE not in state:
        mixin = model_on_meta.mixins["pos_embed"]
        mixin.to_empty(device="cpu")
        mixin.reset_buffers()
        out[SINCOS_TABLE] = mixin.pos_embedding.detach().to(dtype).clone()
    return out


LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # the name diffusers' save_lora_weights writes
_PEFT_KEY = re.compile(r"^(?:transformer\.|base_model\.model\.)?(?P<module>.+)\.lora_(?P<kind>[AB])(?:\.default)?\.weight$")
_KOHYA_KEY = re.compile(r"^lora_(?:unet|transformer)_(?P<module>.+)\.(?P<kind>lora_down\.weight|lora_up\.weight|alpha)$")


@dataclass
class DiffusersLora:
    """A diffusers LoRA file read into SAT adapter keys (`transformer.layers.N.<target>.matrix_{A,B}.i`)."""

    file: Path
    adapters: dict[str, torch.Tensor]
    targets: list[str]
    rank: int
    alpha: float
    alpha_source: str


def read_lora(path: str | os.PathLike[str]) -> DiffusersLora:
    """A `pytorch_lora_weights.safetensors` (PEFT keys as diffusers writes them, or kohya-style
    `lora_unet_*.lora_down/lora_up/alpha`), given as the file or its folder. SAT's LoRA has one
    rank and one alpha: adapters of several ranks or alphas, text-encoder adapters and modules
    SAT cannot wrap are errors that name them."""
    from safetensors import safe_open

    file = Path(path)
    if file.is_dir():
        file = file / LORA_WEIGHTS
    if not file.is_file():
        raise ConversionError(f"{file} does not exist (a diffusers LoRA is {LORA_WEIGHTS} or its folder)")
    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata() or {}
        raw = {k: handle.get_tensor(k) for k in handle.keys()}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    kohya_names = _kohya_names(raw)
    for key, value in raw.items():
        if (match := _KOHYA_KEY.match(key)) is not None:
            module = kohya_names.get(match["module"], match["module"])
            if match["kind"] == "alpha":
                alphas[module] = float(value)
            else:
                pairs.setdefault(module, {})["A" if "down" in match["kind"] else "B"] = value
        elif key.startswith("text_encoder."):
            raise ConversionError(f"{file}: {key}: text-encoder LoRA is not supported (SAT's T5 is frozen)")
        elif (match := _PEFT_KEY.match(key)) is not None:
            pairs.setdefault(match["module"], {})[match["kind"]] = value
        else:
            raise ConversionError(f"{file}: {key!r} is not a LoRA tensor (lora_A/lora_B, or kohya lora_down/lora_up/alpha)")
    incomplete = sorted(m for m, p in pairs.items() if set(p) != {"A", "B"})
    if incomplete:
        raise ConversionError(f"{file}: lora_A or lora_B missing for {', '.join(incomplete[:8])}")
    ranks = {p["A"].shape[0] for p in pairs.values()}
    if len(ranks) != 1:
        raise ConversionError(f"{file}: adapters of ranks {sorted(ranks)}; SAT's LoRA has one rank (lora_config.params.r)")
    rank = ranks.pop()
    alpha, source = _lora_alpha(file, metadata, alphas, rank)
    try:
        adapters, targets = diffusers_lora_to_sat({m: (p["A"], p["B"]) for m, p in pairs.items()})
    except KeyError as err:
        raise ConversionError(f"{file}: {err.args[0]}") from err
    return DiffusersLora(file, adapters, targets, rank, alpha, source)


def _kohya_names(raw: Mapping[str, torch.Tensor]) -> dict[str, str]:
    # kohya writes module paths with '_' for '.'; the block modules SAT can wrap are the only
    # names that need to be found again (anything else is reported as written)
    from .diffusers_keys import LORA_TARGETS

    layers = {int(m.group(1)) for k in raw if (m := re.match(r"^lora_(?:unet|transformer)_transformer_blocks_(\d+)_", k))}
    names = [f"transformer_blocks.{i}.{module}" for i in layers for modules in LORA_TARGETS.values() for module in modules]
    return {name.replace(".", "_"): name for name in names}


def _lora_alpha(file: Path, metadata: Mapping[str, str], alphas: Mapping[str, float], rank: int) -> tuple[float, str]:
    if alphas:
        values = set(alphas.values())
        if len(values) != 1:
            raise ConversionError(f"{file}: per-module alphas {sorted(values)}; SAT's LoRA has one lora_alpha")
        return values.pop(), "the file's .alpha tensors"
    if "lora_adapter_metadata" in metadata:
        meta = json.loads(metadata["lora_adapter_metadata"])
        for key in ("transformer.rank_pattern", "transformer.alpha_pattern"):
            if meta.get(key):
                raise ConversionError(f"{file}: metadata {key} {meta[key]}: SAT's LoRA has one rank and one alpha")
        if meta.get("transformer.lora_alpha") is not None:
            return float(meta["transformer.lora_alpha"]), "the file's lora_adapter_metadata"
    # diffusers loads a file without alpha with lora_alpha = r (scale 1)
    return float(rank), "none stored: diffusers' default alpha = r"

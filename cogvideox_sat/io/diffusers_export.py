"""Build diffusers CogVideoX components from SAT weights and write a pipeline folder.

The steps the conversion tools share: read a checkpoint in any of the layouts we meet (released
SAT folder, DeepSpeed iteration folder, `3d-vae.pt`, safetensors), take the sub-model wanted
(`model.diffusion_model.*`, `first_stage_model.*`; full fine-tunes carry both plus
`conditioner.*`), check it against the model the config describes, rename with the tables in
`diffusers_keys` / `diffusers_vae_keys`, and load it into the diffusers class strictly.
diffusers is imported only here, when a conversion runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .diffusers_configs import ConversionError, build_dit_on_meta, transformer_config, vae_config
from .diffusers_keys import sat_dit_to_diffusers
from .diffusers_vae_keys import sat_vae_to_diffusers
from .dit_variant import check_dit_checkpoint
from .sat_checkpoint import DIT_PREFIX, MODEL_STATES_FILES, read_module_state, resolve_checkpoint_file, split_prefix

VAE_PREFIX = "first_stage_model."
# pipeline component -> (library, class) as model_index.json names them
COMPONENTS: dict[str, tuple[str, str]] = {
    "tokenizer": ("transformers", "T5Tokenizer"),
    "text_encoder": ("transformers", "T5EncoderModel"),
    "vae": ("diffusers", "AutoencoderKLCogVideoX"),
    "transformer": ("diffusers", "CogVideoXTransformer3DModel"),
}


def read_state(path: str | os.PathLike[str], weights_only: bool = True) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint: a `.safetensors` file, a torch file (`module` / `state_dict`
    / plain dict), or a SAT/DeepSpeed folder (`latest` + `<iter>/mp_rank_00_model_states.pt`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    file = resolve_checkpoint_file(path)
    if file.name == MODEL_STATES_FILES[1]:  # ZeRO-3's rank-0 file: the weights are partitioned elsewhere
        raise ConversionError(
            f"{path} is a ZeRO-3 checkpoint (its model states hold no weights): "
            "consolidate it with tools/convert_weight_deepspeed2hf.py (--to sat / --to diffusers)"
        )
    state = read_module_state(file, weights_only=weights_only)
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):  # official 3d-vae.pt
        state = dict(state["state_dict"])
    return state


def dit_part(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(DiT tensors without `model.diffusion_model.`, {other prefix: count}). A state dict of
    the DiT alone (no prefix anywhere) is returned as it is."""
    if any(k.startswith(DIT_PREFIX) for k in state):
        return split_prefix(dict(state), DIT_PREFIX)
    if any(k.startswith("transformer.layers.") for k in state):
        return dict(state), {}
    raise ConversionError(f"no DiT tensors ({DIT_PREFIX}* or transformer.layers.*) in the checkpoint")


def vae_part(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VAE tensors (`encoder.*`, `decoder.*`, `loss.*`) of a VAE file or of an engine checkpoint
    that carries the VAE as `first_stage_model.*` (full fine-tunes, official saves)."""
    if any(k.startswith(VAE_PREFIX) for k in state):
        state, _ = split_prefix(dict(state), VAE_PREFIX)
    if not any(k.startswith("decoder.") for k in state):
        raise ConversionError("no VAE tensors (encoder.*/decoder.*, or first_stage_model.*) in the checkpoint")
    return dict(state)


def convert_transformer(
    dit_state: Mapping[str, torch.Tensor],
    network_config: Mapping[str, Any],
    dtype: torch.dtype = torch.float32,
    what: str = "the model config",
    source: str = "the checkpoint",
) -> Any:
    """A `CogVideoXTransformer3DModel` (for saving: buffers diffusers recomputes stay on the meta
    device) holding `dit_state`, a plain (no LoRA) SAT DiT state dict of `network_config`.
    Raises `ConversionError` naming the differences when the checkpoint is another variant."""
    from diffusers import CogVideoXTransformer3DModel

    expected = build_dit_on_meta(network_config)
    check_dit_checkpoint(dit_state, expected.state_dict(), expected.out_channels, what, source)
    state = sat_dit_to_diffusers(dit_state, expected.patch_size)
    return _assemble(CogVideoXTransformer3DModel, transformer_config(expected), state, dtype)


def convert_vae(
    vae_state: Mapping[str, torch.Tensor],
    first_stage_config: Mapping[str, Any],
    scaling_factor: float,
    invert_scale_latents: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """An `AutoencoderKLCogVideoX` (for saving) holding a SAT VAE state dict."""
    from diffusers import AutoencoderKLCogVideoX

    config = vae_config(first_stage_config, scaling_factor, invert_scale_latents)
    state = sat_vae_to_diffusers(vae_state, levels=len(config["block_out_channels"]))
    return _assemble(AutoencoderKLCogVideoX, config, state, dtype)


def _assemble(cls: type, config: dict[str, Any], state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> Any:
    """`cls(**config)` built on the meta device, then given `state` strictly (no second copy of
    the weights is ever allocated)."""
    with torch.device("meta"):
        model = cls(**config)
    try:
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as err:
        raise ConversionError(f"{cls.__name__} does not accept the converted weights:\n{err}") from err
    return model


def save_component(model: Any, folder: str | os.PathLike[str], max_shard_size: str = "5GB") -> Path:
    """config.json + safetensors shards that `<class>.from_pretrained(folder)` loads."""
    model.save_pretrained(str(folder), safe_serialization=True, max_shard_size=max_shard_size)
    return Path(folder)


def write_model_index(folder: str | os.PathLike[str], pipeline_class: str, scheduler_class: str) -> Path:
    """`model_index.json` of a CogVideoX pipeline folder whose component folders exist."""
    import diffusers

    folder = Path(folder)
    missing = [name for name in (*COMPONENTS, "scheduler") if not (folder / name).is_dir()]
    if missing:
        raise ConversionError(f"{folder} lacks {', '.join(missing)}: a pipeline folder needs every component")
    index: dict[str, Any] = {"_class_name": pipeline_class, "_diffusers_version": diffusers.__version__}
    index.update({name: list(lib_cls) for name, lib_cls in COMPONENTS.items()})
    index["scheduler"] = ["diffusers", scheduler_class]
    path = folder / "model_index.json"
    path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    return path

"""Transformer weights for sampling: a base checkpoint, optionally a LoRA-only one on top.

- `load` (args.load): a released SAT `transformer` folder, a full fine-tune, an official
  LoRA run (those hold the base weights and the adapters together), or a diffusers transformer
  folder (converted in memory).
- `lora_load`: a LoRA run of ours, whose checkpoints hold only the adapter matrices (the
  frozen base stays out of them); it is applied on top of `load`.

A LoRA-only checkpoint given as `load` has no base weights to sample with: that is an error
that says which folder to pass where, never a silent half-random model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from cogvideox_sat.io import (
    DIT_PREFIX,
    CheckpointMismatchError,
    LoadReport,
    read_module_state,
    resolve_checkpoint_file,
    split_prefix,
)
from cogvideox_sat.io.lora_state import is_lora_key, is_lora_only, lora_layer_names
from cogvideox_sat.io.run_folder import read_training_config
from cogvideox_sat.models.lora_linear import LoraLinear
from cogvideox_sat.training.weights import load_transformer



class LoraCheckpointError(ValueError):
    """A LoRA-only checkpoint used without a base, or LoRA weights for a model without LoRA."""


def dit_state(folder: str | os.PathLike) -> tuple[Path, dict[str, torch.Tensor]]:
    """(model-states file, DiT tensors without the `model.diffusion_model.` prefix); a diffusers
    transformer folder is converted in memory."""
    from cogvideox_sat.io.diffusers_import import is_diffusers_transformer, read_transformer

    if is_diffusers_transformer(folder):
        return Path(folder), read_transformer(folder).state
    path = resolve_checkpoint_file(folder)
    # our own run folders carry numpy RNG state in the same file: full unpickling (trusted files)
    state, _ = split_prefix(read_module_state(path, weights_only=False), DIT_PREFIX)
    return path, state


def recorded_base(folder: str | os.PathLike) -> Optional[str]:
    """The `args.load` a training run of ours started from (its training_config.yaml), if any."""
    config = read_training_config(folder)
    if config is None:
        return None
    load = OmegaConf.select(config, "args.load")
    return str(load) if load else None


def _lora_only_error(folder: str | os.PathLike) -> LoraCheckpointError:
    base = recorded_base(folder)
    hint = f" (this run was trained from '{base}')" if base else ""
    return LoraCheckpointError(
        f"'{folder}' holds only LoRA adapters, no base weights to sample with. Set args.load to the base "
        f"transformer folder{hint} and pass this folder as --lora-load (args.lora_load)."
    )


def load_lora(engine: Any, folder: str | os.PathLike) -> LoadReport:
    """Load a LoRA-only checkpoint into the engine's DiT (built with the same lora_config).

    Strict on what the file holds: every adapter of the model must be in it, every tensor in it
    must exist in the model with the same shape (other tensors, e.g. the position table our
    trainer saves with the adapters, load too). The base weights are left as they are.
    """
    dit = engine.model.diffusion_model
    if not any(isinstance(m, LoraLinear) for m in dit.modules()):
        raise LoraCheckpointError(
            f"--lora-load '{folder}': the model has no LoRA layers; use the model config the LoRA was "
            "trained with (one with network_config.params.modules.lora_config, e.g. configs/cogvideox_2b_lora.yaml)"
        )
    path, state = dit_state(folder)
    if not lora_layer_names(state):
        raise LoraCheckpointError(f"--lora-load '{folder}': {path} holds no LoRA adapter matrices")
    model_state = dit.state_dict()
    adapters = {k for k in model_state if is_lora_key(k)}
    report = LoadReport(source=str(path))
    report.missing = sorted(adapters - set(state))
    report.unexpected = sorted(k for k in state if k not in model_state)
    report.mismatched = [
        (k, tuple(v.shape), tuple(model_state[k].shape))
        for k, v in state.items()
        if k in model_state and tuple(v.shape) != tuple(model_state[k].shape)
    ]
    if not report.ok:
        raise CheckpointMismatchError(report)
    dit.load_state_dict(state, strict=False)  # checked above; the base weights are not in this file
    report.loaded = len(state)
    return report


def load_sampling_weights(
    engine: Any, load: str | os.PathLike, lora_load: Optional[str | os.PathLike] = None, lenient: bool = False
) -> list[LoadReport]:
    """Load `load` (base or complete model) and then, if given, the LoRA-only `lora_load`.

    `lenient` (the official force_inference) tolerates missing and unexpected keys in `load`, as
    the official loader did; tensors of the wrong shape (a checkpoint of another model) are an
    error either way, and so are LoRA-only files and any mismatch in `lora_load`.
    """
    _, state = dit_state(load)
    if is_lora_only(state):
        raise _lora_only_error(load)
    del state
    report = load_transformer(engine, load, lenient=lenient)
    if report.mismatched or report.loaded == 0:
        raise CheckpointMismatchError(report)
    reports = [report]
    if lora_load:
        reports.append(load_lora(engine, lora_load))
    return reports


def merge_lora_weights(engine: Any) -> int:
    """Fold every LoRA adapter of the DiT into its base weight (one matmul per layer instead of
    three); returns the number of layers merged. The merge runs in float32."""
    dit = engine.model.diffusion_model
    if not any(isinstance(m, LoraLinear) for m in dit.modules()):
        return 0
    from cogvideox_sat.models.lora import merge_lora  # imports SwissArmyTransformer, already loaded with LoRA

    return merge_lora(dit)

"""SAT LoRA tensors in a state dict: where alpha comes from, and merging into plain weights.

SAT's `LoraLinear` adds concat_i(B_i A_i) * lora_alpha / r to a base weight split into
`partition` output slices (3 for the fused query_key_value). The scale is not stored in the
checkpoint, so it must come from the config the adapters were trained with.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .diffusers_configs import ConversionError

_MATRIX = re.compile(r"^(?P<layer>.+)\.matrix_(?P<kind>[AB])\.(?P<part>\d+)$")
TRAINING_CONFIG = "training_config.yaml"  # written by our training next to `latest`


def find_training_config(path: str | os.PathLike[str]) -> Path | None:
    """The run's `training_config.yaml` for a checkpoint path (run folder, iteration folder or
    model-states file), or None."""
    path = Path(path).resolve()
    for folder in (path, *path.parents[:2]):
        if (folder / TRAINING_CONFIG).is_file():
            return folder / TRAINING_CONFIG
    return None


def lora_params(network_config: Mapping[str, Any]) -> dict[str, Any] | None:
    """`lora_config.params` of a network config (SAT defaults filled), or None without LoRA."""
    modules = (network_config.get("params") or {}).get("modules") or {}
    lora = modules.get("lora_config")
    if lora is None:
        return None
    params = dict(lora.get("params") or {})
    params.setdefault("lora_alpha", 1.0)  # SAT lora2.LoraMixin's default
    return params


def lora_rank(state: Mapping[str, torch.Tensor]) -> int:
    """r of the adapters in `state` (all must share it)."""
    ranks = {v.shape[0] for k, v in state.items() if ".matrix_A." in k}
    if len(ranks) != 1:
        raise ConversionError(f"expected LoRA adapters of one rank, found ranks {sorted(ranks) or 'none'}")
    return ranks.pop()


def merge_lora_state(state: Mapping[str, torch.Tensor], lora_alpha: float) -> dict[str, torch.Tensor]:
    """A plain state dict: every `X.original.weight` + its adapters becomes `X.weight` (computed
    in float32, stored in the base weight's dtype); `X.original.bias` becomes `X.bias`."""
    adapters: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _MATRIX.match(key)
        if match:
            adapters.setdefault(match["layer"], {"A": {}, "B": {}})[match["kind"]][int(match["part"])] = value
        elif ".original." in key:
            out[key.replace(".original.", ".", 1)] = value
        else:
            out[key] = value
    for layer, mats in adapters.items():
        base = out.get(f"{layer}.weight")
        if base is None:
            raise ConversionError(f"LoRA adapters of {layer} without its base weight {layer}.original.weight")
        parts = sorted(mats["A"])
        if parts != sorted(mats["B"]) or parts != list(range(len(parts))):
            raise ConversionError(f"{layer}: incomplete LoRA matrices A{sorted(mats['A'])} B{sorted(mats['B'])}")
        rank = mats["A"][0].shape[0]
        delta = torch.cat([mats["B"][i].float() @ mats["A"][i].float() for i in parts]) * (lora_alpha / rank)
        out[f"{layer}.weight"] = (base.float() + delta).to(base.dtype)
    return out

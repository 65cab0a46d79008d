"""SAT LoRA tensors in a state dict: the one place that knows their key names, where alpha
comes from, and merging into plain weights.

SAT's `LoraLinear` adds concat_i(B_i A_i) * lora_alpha / r to a base weight split into
`partition` output slices (3 for the fused query_key_value): `<layer>.matrix_A.<i>`,
`<layer>.matrix_B.<i>`, the base weight at `<layer>.original.weight`. The scale is not stored in
the checkpoint, so it must come from the config the adapters were trained with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ..models.lora_linear import lora_delta
from .diffusers_configs import ConversionError

_MATRIX = re.compile(r"^(?P<layer>.+)\.matrix_(?P<kind>[AB])\.(?P<part>\d+)$")
LORA_MARKERS = (".matrix_A.", ".matrix_B.")  # in adapter keys and parameter names
ORIGINAL = ".original."  # the base weight of a layer built with LoRA


def is_lora_key(key: str) -> bool:
    """An adapter tensor (`...matrix_A.i` / `...matrix_B.i`)."""
    return any(m in key for m in LORA_MARKERS)


def has_lora(state: Mapping[str, Any]) -> bool:
    """`state` (keys suffice) holds LoRA adapters."""
    return any(".matrix_A." in k for k in state)


def lora_adapters(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors of `state`."""
    return {k: v for k, v in state.items() if is_lora_key(k)}


def lora_layer_names(state: Mapping[str, Any]) -> set[str]:
    """Layers (e.g. `transformer.layers.0.attention.dense`) that have adapter matrices in `state`."""
    return {k.split(".matrix_", 1)[0] for k in state if is_lora_key(k)}


def is_lora_only(state: Mapping[str, Any]) -> bool:
    """Adapters without the weights they adapt (neither `<layer>.original.weight` nor `<layer>.weight`)."""
    layers = lora_layer_names(state)
    return bool(layers) and all(f"{l}{ORIGINAL}weight" not in state and f"{l}.weight" not in state for l in layers)


def lora_scale(params: Mapping[str, Any]) -> dict[str, Any]:
    """r, lora_alpha and the scale lora_alpha / r applied to B A, from lora_config params."""
    r, alpha = int(params["r"]), float(params["lora_alpha"])
    return {"r": r, "lora_alpha": alpha, "scale": alpha / r}




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
        elif ORIGINAL in key:
            out[key.replace(ORIGINAL, ".", 1)] = value
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
        delta = lora_delta([mats["A"][i] for i in parts], [mats["B"][i] for i in parts], lora_alpha / rank)
        out[f"{layer}.weight"] = (base.float() + delta).to(base.dtype)
    return out

"""Key and layout adapters between released SAT DiT checkpoints and `DiffusionTransformer`.

Each adapter is a rule with a reason that ends up in the load report:

- `conv patch embedding`: CogVideoX 1.0 weights were saved by official code whose
  `patch_embed.proj` was a Conv2d ([hidden, C, p, p]); the current layout is a Linear over
  (c, ph, pw)-ordered patches ([hidden, C*p*p]) — the same numbers, reshaped.
- `base weight into LoRA`: a plain checkpoint (`...query_key_value.weight`) loaded into a model
  built with `lora_config` goes to `...query_key_value.original.weight`; that layer's adapters
  then keep their fresh init (A random, B zero = no change), which is how LoRA training starts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

PATCH_PROJ = "mixins.patch_embed.proj.weight"
_ORIGINAL = ".original."


def adapt_dit_state_dict(
    state_dict: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[tuple[str, str, str]], set[str]]:
    """(adapted state dict, renames as (checkpoint key, model key, why), model keys that may stay
    at init)."""
    adapted = dict(state_dict)
    renames: list[tuple[str, str, str]] = []
    keep_ok: set[str] = set()

    # 1. Conv2d patch projection -> Linear
    weight, target = adapted.get(PATCH_PROJ), model_state.get(PATCH_PROJ)
    if weight is not None and target is not None and weight.dim() == 4 and target.dim() == 2:
        if weight.numel() == target.numel():
            adapted[PATCH_PROJ] = weight.reshape(weight.shape[0], -1)
            renames.append((PATCH_PROJ, PATCH_PROJ, f"conv patch embedding {tuple(weight.shape)} -> linear {tuple(target.shape)}"))

    # 2. Plain base weights into LoRA-wrapped layers
    for key in model_state:
        if _ORIGINAL not in key or key in adapted:
            continue
        base = key.replace(_ORIGINAL, ".", 1)
        if base in adapted:
            adapted[key] = adapted.pop(base)
            renames.append((base, key, "base weight into LoRA"))
            layer = key.split(_ORIGINAL, 1)[0]
            keep_ok.update(k for k in model_state if k.startswith(f"{layer}.matrix_"))
    return adapted, renames, keep_ok

"""Which engine parameters train: the official freezing policy (`not_trainable_prefixes`,
LoRA matrices always trainable, the legacy `lora_train` flag), applied once after the engine is
built. The engine wires the model; this decides what of it learns."""

from __future__ import annotations

from typing import Any

from cogvideox_sat import distributed
from cogvideox_sat.io.lora_state import is_lora_key


def disable_untrainable_params(engine: Any) -> int:
    """Freeze what must not train and print (rank 0) and return the trainable count.

    As officially: parameters whose names start with a `not_trainable_prefixes` entry ("all"
    matches everything) stop requiring grad, except LoRA matrices (`matrix_A`/`matrix_B`).
    With `lora_train: true` (a legacy naming) nothing is frozen; parameters outside a
    `lora_layer` get `lr_scale = 0` instead (an optimizer honouring `lr_scale`, like SAT's,
    then leaves them unchanged).
    """
    total = 0
    for name, param in engine.named_parameters():
        if not param.requires_grad:
            continue
        if engine.lora_train:
            if "lora_layer" in name:
                total += param.numel()
            else:
                param.lr_scale = 0
            continue
        frozen = any(prefix == "all" or name.startswith(prefix) for prefix in engine.not_trainable_prefixes)
        if is_lora_key(name):
            frozen = False
        if frozen:
            param.requires_grad_(False)
        else:
            total += param.numel()
    if distributed.is_rank0():
        print(f"***** Total trainable parameters: {total} *****", flush=True)
    return total

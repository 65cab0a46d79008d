"""Opt-in FP8 matmuls for the transformer projections (`transformer_args.fp8`), via torchao.

torchao's float8 training swaps the chosen `nn.Linear`s for `Float8Linear`s, which cast input,
weight and output gradient to float8 (e4m3) per tensor (`tensorwise`, torchao's default and
the fastest) or per row (`rowwise`, closer to bf16) and multiply with `torch._scaled_mm`. The
swapped modules keep their `weight`/`bias` parameters, so state-dict keys do not change.

Converted here: each layer's `attention.query_key_value`, `attention.dense`,
`mlp.dense_h_to_4h`, `mlp.dense_4h_to_h` (their `original` base Linear under LoRA: the frozen
base matmuls run in FP8, the adapters' own matmuls stay in the compute dtype). The adaLN
modulation (one row per sample), embeddings and the output head stay as they are.

Compile (`transformer_args.compile: true`) is what makes this fast: it fuses the casts and
drops the weight-gradient matmul of frozen weights, which torchao's eager backward computes.
"""

from __future__ import annotations

import dataclasses
import re

from torch import nn

RECIPES: tuple[str, ...] = ("tensorwise", "rowwise")
_PROJECTION = re.compile(r"(^|\.)layers\.\d+\.(attention\.(query_key_value|dense)|mlp\.(dense_h_to_4h|dense_4h_to_h))(\.original)?$")


def is_projection(module: nn.Module, name: str) -> bool:
    """Whether `name` (relative to the transformer or the DiT) is a projection Linear that FP8
    can take: torch._scaled_mm needs both sizes to be multiples of 16."""
    return (
        isinstance(module, nn.Linear)
        and _PROJECTION.search(name) is not None
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
    )


def convert_projections_to_float8(module: nn.Module, recipe: str) -> int:
    """Swap the projection Linears inside `module` for torchao's Float8Linear with `recipe`;
    returns how many were swapped. Raises ValueError naming the key when torchao is missing."""
    if recipe not in RECIPES:
        raise ValueError(f"transformer_args.fp8={recipe!r}: choose true, {' or '.join(RECIPES)}")
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as err:
        raise ValueError(
            "transformer_args.fp8 needs torchao (an optional GPU extra: pip install torchao, see requirements-gpu.txt); "
            "remove transformer_args.fp8 to train in bf16"
        ) from err
    names = [name for name, child in module.named_modules() if is_projection(child, name)]
    # pad_inner_dim: the weight-gradient matmul's inner size is the token count (batch x frames x
    # patches + text), e.g. 5626 for 13 frames at 480x720, and torch._scaled_mm wants multiples of 16
    config = dataclasses.replace(Float8LinearConfig.from_recipe_name(recipe), pad_inner_dim=True)
    convert_to_float8_training(module, module_filter_fn=is_projection, config=config)
    return len(names)

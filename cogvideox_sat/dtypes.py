"""The one map between precision names ("fp32", "fp16", "bf16") and torch dtypes, shared by the
model, the engine, training, sampling, the tools and the benchmarks."""

from __future__ import annotations

from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_from_name(name: str | torch.dtype) -> torch.dtype:
    """`name` as a torch dtype; a dtype passes through. Raises ValueError naming the choices."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r}: choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: Any) -> str:
    """The precision name of a torch dtype; anything else counts as fp32."""
    return {v: k for k, v in DTYPES.items()}.get(dtype, "fp32")


def precision_from_flags(args: Any) -> tuple[torch.dtype, str]:
    """The dtype an args namespace's fp16 / bf16 flags ask for (fp16 wins, as in the official
    engine), and its name."""
    name = "fp16" if getattr(args, "fp16", False) else "bf16" if getattr(args, "bf16", False) else "fp32"
    return DTYPES[name], name

"""Activation checkpointing of the transformer layers: none, full or selective.

- full: each chunk of `checkpoint_num_layers` layers keeps only its input and recomputes
  everything in backward (official `checkpoint_activations: true`).
- selective: the same, except the attention kernels' outputs are saved during the forward and
  reused, so backward recomputes only the cheap parts (norms, modulation, projections, MLP);
  attention is ~60% of a CogVideoX layer's FLOPs. Built on torch's selective checkpoint
  contexts, which match ops by identity, so the saved tensors are exactly the kernels' outputs.
- The last `checkpoint_skip_layers` chunks run without checkpointing (SAT semantics).
Checkpointing only happens when autograd records (training); under no_grad it is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

_aten = torch.ops.aten
_ATTENTION_KERNELS = tuple(
    getattr(_aten, name).default
    for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable",
    )
    if hasattr(_aten, name)
)


def _keep_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _ATTENTION_KERNELS else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_context():
    return create_selective_checkpoint_contexts(_keep_attention)


def run_layers(
    layer_fn: Callable[[int, torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    num_layers: int,
    mode: str = "none",
    chunk: int = 1,
    skip_last: int = 0,
) -> torch.Tensor:
    """hidden = layer_fn(i, hidden) for i in range(num_layers), checkpointed per `mode`."""
    active = mode != "none" and torch.is_grad_enabled()
    for start in range(0, num_layers, chunk if active else num_layers):
        end = min(start + (chunk if active else num_layers), num_layers)
        run = partial(_run_range, layer_fn, start, end)
        if not active or start + skip_last >= num_layers:
            hidden = run(hidden)
        elif mode == "selective":
            hidden = checkpoint(run, hidden, use_reentrant=False, context_fn=_selective_context)
        else:
            hidden = checkpoint(run, hidden, use_reentrant=False)
    return hidden


def _run_range(layer_fn: Callable[[int, torch.Tensor], torch.Tensor], start: int, end: int, hidden: torch.Tensor) -> torch.Tensor:
    for i in range(start, end):
        hidden = layer_fn(i, hidden)
    return hidden

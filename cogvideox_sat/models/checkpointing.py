"""Activation checkpointing of the transformer layers, and the optionally compiled layer loop.

Modes (`transformer_args.checkpoint_mode`; `checkpoint_activations: true` turns them on):
- `full`: each chunk of `checkpoint_num_layers` layers keeps only its input and recomputes
  everything in backward (official `checkpoint_activations: true`).
- `selective`: the same, except the attention kernels' outputs are saved during the forward and
  reused, so backward recomputes only the cheap parts (norms, modulation, projections, MLP);
  attention is ~60% of a CogVideoX layer's FLOPs.
- `selective_mlp_out`: also keeps the output of the MLP's second projection (dense_4h_to_h),
  the largest matmul whose output is one hidden-wide tensor (a third of the layer's matmul work).
- `selective_matmul`: keeps every matmul output too; backward recomputes only elementwise ops,
  norms and GELU. Costs more memory than it saves time except on short clips.
- `auto` (config only, with `checkpoint_budget_gib`): a mix of the modes above, one per layer,
  planned by `checkpoint_plan` from the costs in the table below so that the kept activations of
  all layers fit the budget (activations only; weights and optimizer state are separate);
  `run_blocks` takes the per-layer list.
- The last `checkpoint_skip_layers` layers run without checkpointing (SAT semantics).
Selective modes are built on torch's selective checkpoint contexts, which match ops by
identity (the SDPA kernels and FlashAttention-4's custom op, `attention.ATTENTION_OPS`) (and the MLP projection by its weight shape), so saved tensors are exactly those ops'
outputs and every mode gives the same numbers. Checkpointing only happens when autograd
records (training); under no_grad it is a no-op.

Activation memory kept per layer, in units of one hidden-wide bf16 tensor (B x S x hidden x 2
bytes: 0.0636 GiB for 2B and 0.1017 GiB for 5B at 49x480x720, batch 1; x30 / x42 layers):

| mode              | units/layer | 2B, 30 layers | 5B, 42 layers | 2B LoRA peak* | 5B LoRA peak* |
|-------------------|-------------|---------------|---------------|---------------|---------------|
| full              | 1           | 1.9 GiB       | 4.3 GiB       | 6.7 (meas.)   | 17.1 (meas.)  |
| selective         | 2           | 3.8 GiB       | 8.5 GiB       | 8.6 (meas.)   | 21.4 (meas.)  |
| selective_mlp_out | 3           | 5.7 GiB       | 12.8 GiB      | ~10.5         | ~25.6         |
| selective_matmul  | 11 (15 LoRA)| 21 GiB        | 47 GiB        | ~34           | ~78           |
| none              | ~13         | ~25 GiB       | ~55 GiB       | 29.7 (meas.)  | -             |

*peak = measured `full` peak (H100, bf16, LoRA r128 on attention) + the extra units; the
selective_matmul count is qkv 3 + dense 1 + mlp in 4 + mlp out 1 + attention 1 + input 1, and
with LoRA the adapted qkv/dense outputs again. Recompute saved per layer (forward FLOPs, 2B /
5B): selective 2.4 / 3.9 TFLOP of attention; selective_mlp_out another 0.52 / 1.35 TFLOP.

`run_blocks` runs the layers; with a `compile_backend` each chunk (its checkpoint included, so
torch's partitioner applies the same policy) goes through one `torch.compile`d function that
takes the layer's modules as arguments, so all layers share one compiled graph. Compiled, the
partitioner also skips recomputing what backward does not need: with LoRA (frozen MLP and
gates) the MLP output is never recomputed, so there selective_mlp_out equals selective, while
eager recomputation runs each layer's forward up to its last saved tensor.

`compile_mode` picks inductor's mode (`COMPILE_MODES`): `max-autotune` also times Triton matmul
templates against cuBLAS for every projection shape and, where a template wins, fuses the
elementwise work that follows the matmul (GELU, gated residuals) into its epilogue, which the
default mode leaves as separate passes over memory. CUDA graphs stay off in both: the layers run
between eager code (embeddings, sampler) and under checkpointing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .attention import ATTENTION_OPS as _ATTENTION_KERNELS

# transformer_args.compile's modes -> torch.compile(mode=...) of inductor (None: its default)
COMPILE_MODES: dict[str, str | None] = {"default": None, "max-autotune": "max-autotune-no-cudagraphs"}
SELECTIVE_MODES: tuple[str, ...] = ("selective", "selective_mlp_out", "selective_matmul")
CHECKPOINT_MODES: tuple[str, ...] = ("full", *SELECTIVE_MODES, "none")

_aten = torch.ops.aten
# op -> index of the (in, out) weight operand
_MATMULS = {_aten.mm.default: 1, _aten.addmm.default: 2}
if hasattr(_aten, "_scaled_mm"):  # FP8 projections (transformer_args.fp8): (input, weight_t, scales...)
    _MATMULS[_aten._scaled_mm.default] = 1


def _keep_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _ATTENTION_KERNELS else CheckpointPolicy.PREFER_RECOMPUTE


def _keep_attention_and_mlp_out(mlp_weight_shape: tuple[int, int], ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if op in _ATTENTION_KERNELS:
        return CheckpointPolicy.MUST_SAVE
    if op in _MATMULS and tuple(args[_MATMULS[op]].shape) == mlp_weight_shape:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _keep_attention_and_matmuls(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if op in _ATTENTION_KERNELS or op in _MATMULS:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


@lru_cache(maxsize=None)
def selective_context_fn(mode: str, hidden_size: int) -> Callable[[], Any]:
    """The `context_fn` of a selective `mode` (one object per mode and width, so a compiled
    caller sees the same function every step)."""
    if mode == "selective":
        policy = _keep_attention
    elif mode == "selective_mlp_out":
        policy = partial(_keep_attention_and_mlp_out, (4 * hidden_size, hidden_size))  # dense_4h_to_h.weight.t()
    elif mode == "selective_matmul":
        policy = _keep_attention_and_matmuls
    else:
        raise ValueError(f"checkpoint mode {mode!r} is not selective; choose one of {SELECTIVE_MODES}")
    return partial(create_selective_checkpoint_contexts, policy)


# ---- the layer loop --------------------------------------------------------------------------
BlockFn = Callable[..., torch.Tensor]  # block_fn(block, hidden, *shared) -> hidden


def _run_group(block_fn: BlockFn, group: tuple[Any, ...], hidden: torch.Tensor, shared: tuple[Any, ...]) -> torch.Tensor:
    for block in group:
        hidden = block_fn(block, hidden, *shared)
    return hidden


def _run_group_full(block_fn: BlockFn, group: tuple[Any, ...], hidden: torch.Tensor, shared: tuple[Any, ...]) -> torch.Tensor:
    return checkpoint(_run_group, block_fn, group, hidden, shared, use_reentrant=False)


def _run_group_selective(
    context_fn: Callable[[], Any], block_fn: BlockFn, group: tuple[Any, ...], hidden: torch.Tensor, shared: tuple[Any, ...]
) -> torch.Tensor:
    return checkpoint(_run_group, block_fn, group, hidden, shared, use_reentrant=False, context_fn=context_fn)


def compile_options(backend: str, compile_mode: str) -> dict[str, Any]:
    """torch.compile keyword arguments of `backend` in `compile_mode` (a `COMPILE_MODES` key)."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {compile_mode!r}: choose one of {tuple(COMPILE_MODES)}")
    if COMPILE_MODES[compile_mode] is None:
        return {"backend": backend}
    if backend != "inductor":  # other backends drop `mode` with only a log line
        raise ValueError(f"compile mode {compile_mode!r} is an inductor mode; the {backend!r} backend has none")
    return {"backend": backend, "mode": COMPILE_MODES[compile_mode]}


@lru_cache(maxsize=None)
def _group_runner(mode: str, hidden_size: int, compile_backend: str | None, compile_mode: str = "default") -> Callable[..., torch.Tensor]:
    if mode == "none":
        run = _run_group
    elif mode == "full":
        run = _run_group_full
    else:
        run = partial(_run_group_selective, selective_context_fn(mode, hidden_size))
    # dynamic=None: static shapes first, one dynamic recompile if a later step's shape differs
    return run if compile_backend is None else torch.compile(run, dynamic=None, **compile_options(compile_backend, compile_mode))


def run_blocks(
    block_fn: BlockFn,
    blocks: Sequence[Any],
    hidden: torch.Tensor,
    shared: tuple[Any, ...] = (),
    mode: str | Sequence[str] = "none",
    chunk: int = 1,
    skip_last: int = 0,
    hidden_size: int = 0,
    compile_backend: str | None = None,
    compile_mode: str = "default",
) -> torch.Tensor:
    """hidden = block_fn(block, hidden, *shared) for each block, checkpointed per `mode`.

    `blocks` hold each layer's modules (compiled code takes them as arguments, so one graph
    serves every layer); `mode` is one mode for all layers or one per layer (`checkpoint_mode:
    auto`; a chunk ends where the mode changes); `hidden_size` identifies the MLP projection for
    `selective_mlp_out`; `compile_backend` (e.g. "inductor") runs each chunk through `torch.compile`, in `compile_mode`.
    """
    num = len(blocks)
    modes = (mode,) * num if isinstance(mode, str) else tuple(mode)
    if len(modes) != num or not set(modes) <= set(CHECKPOINT_MODES):
        raise ValueError(f"checkpoint mode {mode!r}: choose one of {CHECKPOINT_MODES}, or one per layer ({num})")
    active = torch.is_grad_enabled() and set(modes) != {"none"}
    # Eager code runs an unchecked stack in one go; compiled code keeps one layer per call so
    # that the graph is one layer, not the whole unrolled stack.
    step = max(chunk if active else (num if compile_backend is None else 1), 1)
    start = 0
    while start < num:
        group_mode = modes[start] if active and start + skip_last < num else "none"
        end = start + 1
        while end < min(start + step, num) and (modes[end] == modes[start] or not active):
            end += 1
        group = tuple(blocks[start:end])
        hidden = _group_runner(group_mode, hidden_size, compile_backend, compile_mode)(block_fn, group, hidden, shared)
        start = end
    return hidden


def run_layers(
    layer_fn: Callable[[int, torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    num_layers: int,
    mode: str = "none",
    chunk: int = 1,
    skip_last: int = 0,
    hidden_size: int = 0,
) -> torch.Tensor:
    """hidden = layer_fn(i, hidden) for i in range(num_layers), checkpointed per `mode` (eager)."""
    return run_blocks(_call_index, [(layer_fn, i) for i in range(num_layers)], hidden, (), mode, chunk, skip_last, hidden_size)


def _call_index(block: tuple[Callable[[int, torch.Tensor], torch.Tensor], int], hidden: torch.Tensor) -> torch.Tensor:
    layer_fn, index = block
    return layer_fn(index, hidden)

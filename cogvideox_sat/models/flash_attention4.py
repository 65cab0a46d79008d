"""FlashAttention-4 (`flash-attn-4`, CuTe-DSL) as one torch custom op with its own backward.

FA4 launches its kernels outside torch's dispatcher, so torch sees neither the kernel nor its
output: torch.compile would break the graph there, and selective checkpointing could not tell
the attention output from the cheap ops it recomputes. Wrapping the forward and the backward
kernels as custom ops (`cogvideox_sat::fa4_forward` / `fa4_backward`) fixes both: compile keeps
them as opaque nodes (shapes from the fake implementations) and the checkpoint policy saves
`fa4_forward`'s outputs like those of the SDPA kernels.

Layout is FA4's own (B, S, heads, head_dim), the packed QKV projection's, so no transposes.
The op is registered whether or not FA4 is installed (so the checkpoint policy can name it);
the package is imported on first use. `unavailable_reason` says why it cannot run here.
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import lru_cache
from typing import Any

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 128  # FA4's standard range on sm90 and sm100 (8..128, multiple of 8)


@lru_cache(maxsize=None)
def _installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None and importlib.util.find_spec("flash_attn.cute") is not None


def kernels() -> tuple[Any, Any]:
    """(forward, backward) callables of FA4: flash_attn_func(q, k, v, softmax_scale, causal,
    return_lse) -> (out, lse) and _flash_attn_bwd(q, k, v, out, dout, lse, softmax_scale,
    causal) -> (dq, dk, dv, ...). Tests replace this function to run the op on the CPU."""
    from flash_attn.cute import interface

    quiet_aux_data_warning()
    return interface.flash_attn_func, interface._flash_attn_bwd


def quiet_aux_data_warning() -> None:
    """Silence the CuTe DSL's UserWarning that FA4 4.0.0b36's `aux_data` argument "cannot be
    converted to a JitArgument", printed for every kernel it compiles (twice per shape). FA4
    passes it on purpose, and its outputs and gradients match cuDNN's within bf16 error
    (tests/models/test_fast_paths_gpu.py, run on an H100), so the warning only buries the log."""
    warnings.filterwarnings("ignore", message=r"Argument aux_data \(position \d+\) cannot be converted to a JitArgument", category=UserWarning)


def unavailable_reason(device: torch.device, dtype: torch.dtype, head_dim: int, dropout: float) -> str | None:
    """None when FA4 can run attention of this kind here, else why not (one short phrase)."""
    if device.type != "cuda":
        return f"needs a CUDA GPU, not {device.type}"
    major, minor = torch.cuda.get_device_capability(device)
    if major not in (9, 10):
        return f"needs a Hopper or Blackwell GPU (sm90/sm100), this is sm{major}{minor}"
    if dtype not in SUPPORTED_DTYPES:
        return f"needs bf16 or fp16 inputs, got {str(dtype).replace('torch.', '')}"
    if head_dim > MAX_HEAD_DIM or head_dim % 8:
        return f"head_dim {head_dim} unsupported (multiples of 8 up to {MAX_HEAD_DIM})"
    if dropout:
        return "has no attention dropout"
    if not _installed():
        return "flash-attn-4 is not installed (pip install flash-attn-4; see requirements-gpu.txt)"
    return None


# ---- the custom ops ------------------------------------------------------------------------------
@torch.library.custom_op("cogvideox_sat::fa4_forward", mutates_args=())
def fa4_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, S, H, D), lse (B, H, S) float32) of non-causal attention, no mask. Outputs are
    contiguous, as the fake implementation tells the compiler."""
    forward, _ = kernels()
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    out, lse = forward(q, k, v, softmax_scale=softmax_scale, causal=False, return_lse=True)
    return out.contiguous(), lse.contiguous()


@fa4_forward.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    b, s, h, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((b, h, s), dtype=torch.float32)


@torch.library.custom_op("cogvideox_sat::fa4_backward", mutates_args=())
def fa4_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, dout: torch.Tensor, lse: torch.Tensor, softmax_scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of `fa4_forward`."""
    _, backward = kernels()
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    dq, dk, dv = backward(q, k, v, out, dout.contiguous(), lse, softmax_scale, False)[:3]
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@fa4_backward.register_fake
def _(q, k, v, out, dout, lse, softmax_scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, softmax_scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.softmax_scale = softmax_scale


def _backward(ctx: Any, dout: torch.Tensor, dlse: torch.Tensor | None) -> tuple:
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = fa4_backward(q, k, v, out, dout, lse, ctx.softmax_scale)
    return dq, dk, dv, None


fa4_forward.register_autograd(_backward, setup_context=_setup_context)

FORWARD_OP = torch.ops.cogvideox_sat.fa4_forward.default


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """FA4 takes any strides but the last (e.g. q, k, v as views of the packed projection)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def fa4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (B, S, heads, head_dim) tensors."""
    out, _ = fa4_forward(q, k, v, q.shape[-1] ** -0.5)
    return out

"""Full (unmasked) multi-head attention through torch SDPA or FlashAttention-4, selectable.

CogVideoX attends jointly over all text and image tokens with no mask, so no mask is ever
built (SAT's fallback path materialises B x heads x S x S scores: 28 GiB per layer at 5B).

Backends (`transformer_args.attention_backend`):
- `auto`: FlashAttention-4 where it can run (flash-attn-4 installed, Hopper/Blackwell GPU,
  bf16/fp16, head_dim <= 128, no attention dropout; ~1.28x cuDNN's fwd+bwd rate on an H100 at
  CogVideoX shapes, same error against fp32); otherwise, with one log line saying why, SDPA
  preferring cuDNN, then flash, then memory-efficient on sm90+ (cuDNN ~1.5x flash there), and
  torch's own choice elsewhere (CPU: no line).
- `fa4`: only FlashAttention-4 (an error saying why when it cannot run).
- `torch`: torch's own SDPA choice everywhere.
- `cudnn`, `flash`, `efficient`, `math`: only that SDPA kernel (torch raises if it cannot run).

The choice is made eagerly (`resolve_backend`), before compiled layers run, and passed to
them as a plain string: compiled graphs never trace the probing.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import flash_attention4

BACKENDS: tuple[str, ...] = ("auto", "fa4", "torch", "cudnn", "flash", "efficient", "math")
_LOG = logging.getLogger(__name__)

_ONLY: dict[str, list[SDPBackend]] = {
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "math": [SDPBackend.MATH],
}
_HOPPER_PRIORITY = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]


_aten = torch.ops.aten
# The attention kernels' ops, whose outputs selective checkpointing keeps.
ATTENTION_OPS = tuple(
    getattr(_aten, name).default
    for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable",
    )
    if hasattr(_aten, name)
) + (flash_attention4.FORWARD_OP,)

# torch >= 2.6 can reorder backends; older versions keep their own order under "auto"
_SET_PRIORITY = "set_priority" in inspect.signature(sdpa_kernel).parameters


@lru_cache(maxsize=None)
def _prefers_cudnn(device_index: int) -> bool:
    major, _ = torch.cuda.get_device_capability(device_index)
    return major >= 9 and torch.backends.cudnn.is_available()


def _kernel_context(backend: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    if backend in _ONLY:
        return sdpa_kernel(_ONLY[backend])
    if backend == "auto" and device.type == "cuda" and _SET_PRIORITY and _prefers_cudnn(device.index or 0):
        return sdpa_kernel(_HOPPER_PRIORITY, set_priority=True)
    return contextlib.nullcontext()


def kernel_context(backend: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The kernel choice of `backend` on `device` as a context manager. Inside code being
    compiled it is a no-op: compiled layers are traced inside this context, entered eagerly
    around the compiled call, and the traced graph keeps the kernel chosen then."""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return _kernel_context(backend, device)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Softmax(q k^T / sqrt(d)) v over (B, heads, S, d) tensors, no mask (SDPA backends;
    `fa4` is taken in its own layout by `attention_bshd`)."""
    if backend == "fa4":
        return attention_bshd(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), dropout_p, backend).transpose(1, 2)
    with kernel_context(backend, query.device):
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p)


def attention_bshd(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """The same over (B, S, heads, d) tensors, returning (B, S, heads, d). `backend` should be
    resolved already (`resolve_backend`); `auto` here means SDPA's own priority."""
    if backend == "fa4":
        if dropout_p:
            raise ValueError("attention_backend fa4 has no attention dropout: set transformer_args.attention_dropout 0 or use cudnn")
        return flash_attention4.fa4_attention(query, key, value)
    out = attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), dropout_p, backend)
    return out.transpose(1, 2)


_REPORTED: set[str] = set()


@torch.compiler.disable
def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, head_dim: int, dropout_p: float = 0.0) -> str:
    """The kernel `backend` means for attention of this kind on `device`: `auto` becomes `fa4`
    where FlashAttention-4 can run, else stays `auto` (SDPA, cuDNN first on Hopper) after one
    log line per reason on a GPU; `fa4` raises when it cannot run; the rest are returned as is."""
    if backend not in ("auto", "fa4"):
        return backend
    reason = flash_attention4.unavailable_reason(device, dtype, head_dim, dropout_p)
    if reason is None:
        return "fa4"
    if backend == "fa4":
        raise ValueError(f"transformer_args.attention_backend: fa4 cannot run here: FlashAttention-4 {reason}; use auto or cudnn")
    if device.type == "cuda" and reason not in _REPORTED:
        _REPORTED.add(reason)
        _LOG.warning("attention_backend auto: FlashAttention-4 %s; using cuDNN SDPA", reason)
    return "auto"


"""Full (unmasked) multi-head attention through torch SDPA, with a selectable kernel.

CogVideoX attends jointly over all text and image tokens with no mask, so no mask is ever
built (SAT's fallback path materialises B x heads x S x S scores: 28 GiB per layer at 5B).

Backends (`transformer_args.attention_backend`):
- `auto`: on Hopper (sm90) and newer GPUs prefer cuDNN, then flash, then memory-efficient
  (cuDNN measured ~1.5x faster than flash at CogVideoX shapes); elsewhere torch's own choice.
- `torch`: torch's own choice everywhere.
- `cudnn`, `flash`, `efficient`, `math`: only that kernel (torch raises if it cannot run).
"""

from __future__ import annotations

import contextlib
import inspect
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS: tuple[str, ...] = ("auto", "torch", "cudnn", "flash", "efficient", "math")

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
    """Softmax(q k^T / sqrt(d)) v over (B, heads, S, d) tensors, no mask."""
    with kernel_context(backend, query.device):
        return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p)


"""FP8 storage of the frozen base under LoRA (`transformer_args.fp8_base_storage`).

Each frozen projection weight of the transformer layers (the LoRA-wrapped `original`s, the
un-adapted projections) and each layer's adaLN modulation weight is kept as float8 e4m3 with
one power-of-two scale per output row, and upcast to the compute dtype layer by layer when
used (finetrainers' "layerwise upcasting"), halving the memory of the base weights. Adapters,
norms, biases, embeddings and the output head keep their dtype. Only the matmul inputs change
(weights rounded to e4m3, 3 mantissa bits, per-row scaled); the arithmetic stays in bf16.

Storage details, chosen so that the rest of the code base needs no special case:
- the e4m3 bytes are a `uint8` parameter `weight` (requires_grad False): `.to(dtype)`,
  `.half()` and DeepSpeed's casts leave integer tensors alone, checkpoint code that drops
  frozen parameters by name still drops it, and a float8 tensor would be upcast by them;
- scales are powers of two, so casting them to bf16 or fp16 is exact;
- the module's state dict holds `weight` upcast (and `bias`) under the usual keys, and loading
  a full-precision `weight` quantizes it: checkpoints and key names are unchanged;
- backward keeps only the bytes and scales, not the upcast weight (it is upcast again).

Numerics at tiny size are tested on the CPU; runs refuse the CPU (the DiT's forward and the
config rules), as there is no GPU memory to save there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FLOAT8 = torch.float8_e4m3fn
_FLOAT8_MAX = torch.finfo(FLOAT8).max  # 448


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 bytes as uint8 (out, in), float32 power-of-two scales (out, 1)) with
    weight ~= bytes.view(e4m3) * scale; each row's largest value lands in (224, 448]."""
    w = weight.detach().float()
    amax = w.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    scale = torch.exp2(torch.ceil(torch.log2(amax / _FLOAT8_MAX)))
    data = (w / scale).clamp(-_FLOAT8_MAX, _FLOAT8_MAX).to(FLOAT8).view(torch.uint8)
    return data, scale


def dequantize(data: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The (out, in) weight in `dtype` from `quantize_rows`' bytes and scales."""
    return data.view(FLOAT8).to(dtype) * scale.to(dtype)


class _UpcastMatmul(torch.autograd.Function):
    """x @ upcast(weight)^T that saves the bytes for backward instead of the upcast weight."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(data, scale)
        return F.linear(x, dequantize(data, scale, x.dtype))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        data, scale = ctx.saved_tensors
        return grad @ dequantize(data, scale, grad.dtype), None, None


class Float8StoredLinear(nn.Module):
    """A frozen Linear whose weight is stored in e4m3 with per-row scales (see module docstring)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.out_features, self.in_features = linear.weight.shape
        data, scale = quantize_rows(linear.weight)
        self.weight = nn.Parameter(data, requires_grad=False)
        self.register_buffer("weight_scale", scale.to(linear.weight.dtype), persistent=False)
        self.bias = linear.bias

    def dequantized_weight(self) -> torch.Tensor:
        """The (out, in) weight upcast to the scale's dtype (the model's dtype)."""
        return dequantize(self.weight, self.weight_scale, self.weight_scale.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _UpcastMatmul.apply(x, self.weight, self.weight_scale)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, storage=float8_e4m3fn"

    # ---- state dict: the usual `weight` / `bias` keys, full precision ------------------------
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.dequantized_weight().detach()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs) -> None:
        expected = {"weight": (self.out_features, self.in_features)}
        if self.bias is not None:
            expected["bias"] = tuple(self.bias.shape)
        for name, shape in expected.items():
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            value = state_dict[key]
            if tuple(value.shape) != shape:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)}, the model has {shape}")
                continue
            with torch.no_grad():
                if name == "bias":
                    self.bias.copy_(value)
                else:
                    data, scale = quantize_rows(value.to(self.weight.device))
                    self.weight.copy_(data)
                    self.weight_scale.copy_(scale)
        if strict:
            for key in state_dict:
                if key.startswith(prefix) and key[len(prefix) :] not in expected:
                    unexpected_keys.append(key)


def _frozen_linears(dit: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, Linear) of every weight stored in FP8: the projections of each layer
    (the base `original` where LoRA wraps one) and the adaLN modulation Linears."""
    from .lora_linear import LoraLinear

    found = []
    for layer in dit.transformer.layers:
        for owner in (layer.attention, layer.mlp):
            for name, child in list(owner.named_children()):
                if isinstance(child, LoraLinear) and isinstance(child.original, nn.Linear):
                    found.append((child, "original", child.original))
                elif isinstance(child, nn.Linear):
                    found.append((owner, name, child))
    adaln = dit.mixins["adaln_layer"]
    for modulation in adaln.adaLN_modulations:
        for name, child in modulation.named_children():
            if isinstance(child, nn.Linear):
                found.append((modulation, name, child))
    return found


def store_frozen_base_in_float8(dit: nn.Module) -> int:
    """Replace the DiT's frozen base Linears by `Float8StoredLinear`s; returns how many.
    Needs LoRA (`lora_config`): full fine-tuning trains these weights."""
    if "lora" not in dit.mixins:
        raise ValueError(
            "transformer_args.fp8_base_storage stores the frozen base of a LoRA run; this network has no lora_config "
            "(full fine-tuning trains those weights): add modules.lora_config or remove fp8_base_storage"
        )
    count = 0
    for parent, name, linear in _frozen_linears(dit):
        setattr(parent, name, Float8StoredLinear(linear))
        count += 1
    return count

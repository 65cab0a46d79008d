"""A Linear with low-rank adapters, laid out as SAT's `lora2.LoraLinear` (same state-dict keys).

`original` is the frozen base Linear; `matrix_A.i` (r x in) and `matrix_B.i` (out/p x r) adapt
the i-th of `partition` equal output slices (3 for the fused query_key_value, so q, k and v
each get their own adapter). Output = original(x) + concat_i(B_i A_i dropout(x)) * alpha / r,
computed as two matmuls after the base one (down for all partitions, block-diagonal up fused
with the scale and the add).

Not SAT's class itself: its forward goes through a model-parallel copy that needs an
initialised process group in backward, its loading silently skips missing keys (so strict
loading cannot report them), and its merge moves weights to `.cuda()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LoraLinear(nn.Module):
    """`original` + `partition` low-rank adapters (see module docstring)."""

    def __init__(self, original: nn.Linear, partition: int, r: int, lora_alpha: float = 1.0, lora_dropout: float = 0.0):
        super().__init__()
        out_features, in_features = original.weight.shape
        if out_features % partition:
            raise ValueError(f"output size {out_features} does not split into {partition} LoRA partitions")
        if r <= 0:
            raise ValueError(f"LoRA rank r must be > 0, got {r}")
        self.original = original
        self.partition = partition
        self.r = r
        self.lora_alpha = lora_alpha
        self.scaling = lora_alpha / r
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        factory = {"device": original.weight.device, "dtype": original.weight.dtype}
        self.matrix_A = nn.ParameterList(nn.Parameter(torch.empty(r, in_features, **factory)) for _ in range(partition))
        self.matrix_B = nn.ParameterList(
            nn.Parameter(torch.empty(out_features // partition, r, **factory)) for _ in range(partition)
        )
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        # SAT's init: A kaiming-uniform (a = sqrt 5, nn.Linear's default), B zero, so a fresh
        # adapter adds exactly nothing and training starts from the base model.
        for a, b in zip(self.matrix_A, self.matrix_B):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.zeros_(b)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (lets code that inspects `.weight` keep working); upcast when the
        base is stored in FP8 (`fp8_storage`)."""
        dequantized = getattr(self.original, "dequantized_weight", None)
        return dequantized() if dequantized is not None else self.original.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. Frozen base projection (..., in) -> (..., out)
        out = self.original(x)
        # 2. Down-project once for all partitions: (..., in) -> (..., partition * r). Adapters run
        #    in the input's (compute) dtype even if their parameters are kept wider.
        a = self.matrix_A[0] if self.partition == 1 else torch.cat(tuple(self.matrix_A))
        down = F.linear(self.lora_dropout(x), a.to(x.dtype))
        # 3. Up-project every partition with one block-diagonal matmul (partition i's rank slice
        #    feeds only output slice i), scaled and added to the base output in the same kernel:
        #    no per-partition outputs, concatenation or separate scale/add passes.
        b = self.matrix_B[0] if self.partition == 1 else torch.block_diag(*self.matrix_B)
        fused = torch.addmm(out.reshape(-1, out.shape[-1]), down.reshape(-1, down.shape[-1]), b.to(x.dtype).t(), alpha=self.scaling)
        return fused.view(out.shape)

    def delta_weight(self) -> torch.Tensor:
        """concat_i(B_i A_i) * scaling in float32, shaped like the base weight."""
        return lora_delta(list(self.matrix_A), list(self.matrix_B), self.scaling)

    def merged(self) -> nn.Linear:
        """A plain Linear equal to this layer (eval mode), on the same device and dtype."""
        weight = self.weight
        linear = nn.Linear(
            weight.shape[1], weight.shape[0], bias=self.original.bias is not None, device=weight.device, dtype=weight.dtype
        )
        with torch.no_grad():
            linear.weight.copy_((weight.float() + self.delta_weight()).to(weight.dtype))
            if self.original.bias is not None:
                linear.bias.copy_(self.original.bias)
        linear.weight.requires_grad_(weight.requires_grad)
        return linear


def lora_delta(matrices_a: Sequence[torch.Tensor], matrices_b: Sequence[torch.Tensor], scaling: float) -> torch.Tensor:
    """The weight change of SAT LoRA: concat_i(B_i A_i) * scaling over the output partitions, in
    float32. The one copy of the merge math: LoraLinear and io/lora_state (state dicts) use it."""
    return torch.cat([b.float() @ a.float() for a, b in zip(matrices_a, matrices_b)], dim=0) * scaling

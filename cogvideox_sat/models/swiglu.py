"""`SwiGLUMixin` (official `use_SwiGLU`): a gate projection per layer, MLP = silu(gate x) * up x."""

from __future__ import annotations

from torch import nn

from .mixin import Mixin


class SwiGLUMixin(Mixin):
    """`w2.N`: Linear(hidden, inner) gate of layer N (no released CogVideoX model uses it)."""

    def __init__(self, num_layers: int, in_features: int, hidden_features: int, bias: bool = False):
        super().__init__()
        self.w2 = nn.ModuleList(nn.Linear(in_features, hidden_features, bias=bias) for _ in range(num_layers))

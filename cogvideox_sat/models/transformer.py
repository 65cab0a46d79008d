"""The SAT transformer body: layers with attention and MLP under SwissArmyTransformer's key names.

`transformer.layers.N.{input_layernorm, attention.query_key_value, attention.dense,
post_attention_layernorm, mlp.dense_h_to_4h, mlp.dense_4h_to_h}` and
`transformer.final_layernorm` are the names in every released checkpoint. The layers hold
parameters and the two sub-blocks; the adaLN block that wires them (text and image tokens
modulated separately) is `AdaLNMixin.layer_forward`, as in the official code.

Built without SAT's `BaseTransformer` on purpose: its constructor initialises
torch.distributed and reseeds the global RNG, its linears need a model-parallel group even on
one GPU, and any non-trivial mask falls back to a materialised softmax.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..parallel.ulysses import SequenceShard
from .attention import attention_bshd, resolve_backend
from .norms import block_norm
from .rope import Rotary

TensorFn = Callable[[torch.Tensor], torch.Tensor]


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The official MLP activation, GELU with the tanh approximation."""
    return F.gelu(x, approximate="tanh")


class SelfAttention(nn.Module):
    """Joint multi-head self-attention over [text; image] tokens (keys `query_key_value`, `dense`)."""

    def __init__(self, hidden_size: int, num_heads: int, attention_dropout: float, output_dropout: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.hidden_size = hidden_size
        self.stride = 3  # q, k, v thirds of query_key_value (SAT attribute name)
        self.attention_dropout = attention_dropout
        self.query_key_value = nn.Linear(hidden_size, 3 * hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.output_dropout = nn.Dropout(output_dropout)
        self.backend = "auto"

    def forward(
        self,
        hidden: torch.Tensor,
        query_norm: TensorFn | None = None,
        key_norm: TensorFn | None = None,
        rotary: Rotary | None = None,
        shard: SequenceShard | None = None,
        kernel: str | None = None,
    ) -> torch.Tensor:
        """`kernel`: the attention kernel already resolved by the caller (`resolve_backend`);
        None resolves `self.backend` here (eager callers)."""
        b, s, _ = hidden.shape
        # 1. Project and split heads: (b, s, 3 * hidden) -> 3 x (b, s, heads, head_dim), q|k|v thirds
        qkv = self.query_key_value(hidden).view(b, s, 3, self.num_heads, self.head_dim)
        # 1b. Sequence parallel (Ulysses): this rank's tokens, all heads -> all tokens, its heads
        if shard is not None:
            qkv = shard.sequence_to_heads(qkv, head_dim=3)  # (b, S, 3, heads / P, head_dim)
        q, k, v = qkv.unbind(2)
        # 2. QK-LayerNorm over head_dim, all tokens (before RoPE)
        if query_norm is not None:
            q, k = query_norm(q), key_norm(k)
        # 3. RoPE on image tokens (text rows are identity)
        if rotary is not None:
            q, k = rotary(q), rotary(k)
            if rotary.rotate_value:  # official rot_v
                v = rotary(v)
        # 4. Attention in the (b, s, heads, head_dim) layout (SDPA transposes inside)
        dropout = self.attention_dropout if self.training else 0.0
        if kernel is None:
            kernel = resolve_backend(self.backend, q.device, q.dtype, self.head_dim, dropout)
        out = attention_bshd(q, k, v, dropout, kernel)
        if shard is not None:  # back to this rank's tokens with all heads
            out = shard.heads_to_sequence(out, head_dim=2)  # (b, s, heads, head_dim)
        # 5. Merge heads (b, s, hidden) and project
        out = self.dense(out.reshape(b, s, self.hidden_size))
        return self.output_dropout(out)


class MLP(nn.Module):
    """dense_h_to_4h -> activation (GELU tanh) -> dense_4h_to_h; SwiGLU passes a gate projection."""

    def __init__(self, hidden_size: int, inner_size: int, activation: TensorFn, output_dropout: float, bias: bool = True):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(hidden_size, inner_size, bias=bias)
        self.dense_4h_to_h = nn.Linear(inner_size, hidden_size, bias=bias)
        self.activation = activation
        self.dropout = nn.Dropout(output_dropout)

    def forward(self, hidden: torch.Tensor, gate: nn.Module | None = None) -> torch.Tensor:
        inner = self.dense_h_to_4h(hidden)
        if gate is None:
            inner = self.activation(inner)
        else:  # SwiGLU: act(gate(x)) * up(x)
            inner = self.activation(gate(hidden)) * inner
        return self.dropout(self.dense_4h_to_h(inner))


class TransformerLayer(nn.Module):
    """One block's parameters; `AdaLNMixin.layer_forward` runs it."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        inner_size: int,
        layernorm_epsilon: float,
        elementwise_affine: bool,
        use_rms_norm: bool,
        activation: TensorFn,
        hidden_dropout: float,
        attention_dropout: float,
    ):
        super().__init__()
        self.input_layernorm = block_norm(hidden_size, layernorm_epsilon, elementwise_affine, use_rms_norm)
        self.attention = SelfAttention(hidden_size, num_heads, attention_dropout, hidden_dropout)
        self.post_attention_layernorm = block_norm(hidden_size, layernorm_epsilon, elementwise_affine, use_rms_norm)
        self.mlp = MLP(hidden_size, inner_size, activation, hidden_dropout)


class LegacyPositionTable(nn.Module):
    """The unused `transformer.position_embeddings.weight` that RoPE checkpoints still carry.

    SAT creates an `nn.Embedding(max_sequence_length, hidden)`; the sin-cos mixin deletes it,
    the RoPE mixin does not, so 5B/1.5 checkpoints hold it. Kept as a buffer so strict loading
    sees the key while no optimizer or DDP hook sees a parameter that never gets a gradient.
    """

    def __init__(self, rows: int, hidden_size: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(rows, hidden_size))


class Transformer(nn.Module):
    """`transformer.*`: the layer stack and the final LayerNorm (applied to all tokens)."""

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        num_heads: int,
        layernorm_epsilon: float = 1e-5,
        elementwise_affine: bool = True,
        use_rms_norm: bool = False,
        activation: TensorFn = gelu_tanh,
        hidden_dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            TransformerLayer(
                hidden_size,
                num_heads,
                4 * hidden_size,
                layernorm_epsilon,
                elementwise_affine,
                use_rms_norm,
                activation,
                hidden_dropout,
                attention_dropout,
            )
            for _ in range(num_layers)
        )
        self.final_layernorm = block_norm(hidden_size, layernorm_epsilon, elementwise_affine, use_rms_norm)
        self.embedding_dropout = nn.Dropout(hidden_dropout)

    def add_legacy_position_table(self, rows: int) -> None:
        self.position_embeddings = LegacyPositionTable(rows, self.hidden_size)

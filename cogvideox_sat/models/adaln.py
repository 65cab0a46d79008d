"""`AdaLNMixin`: the CogVideoX block — adaLN-modulated joint attention and MLP over [text; image].

Text and image tokens share each layer's LayerNorms, attention and MLP weights but get their
own shift/scale/gate from the conditioning vector (12 chunks per layer). Attention is joint
over the whole sequence. Both row ranges are modulated within one tensor instead of the
official split-and-concat (`segments`), with the same arithmetic.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..parallel.ulysses import SequenceShard
from .mixin import Mixin
from .rope import Rotary
from .segments import gated_residual_segments, modulate_segments


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, with (B, 1, D) shift/scale."""
    return x * (1 + scale) + shift


class BlockModules(NamedTuple):
    """One layer's modules, passed to `adaln_block` as arguments (so one compiled graph can
    serve every layer)."""

    layer: nn.Module  # transformer.layers.N
    modulation: nn.Module  # adaLN_modulations.N
    query_norm: nn.Module | None  # query_layernorm_list.N (qk_ln)
    key_norm: nn.Module | None  # key_layernorm_list.N (qk_ln)
    mlp_gate: nn.Module | None  # swiglu.w2.N (use_SwiGLU)


def adaln_block(
    block: BlockModules,
    hidden: torch.Tensor,
    emb: torch.Tensor,
    text_length: int,
    rotary: Rotary | None = None,
    shard: SequenceShard | None = None,
    kernel: str | None = None,
) -> torch.Tensor:
    """One block: (B, L + N, hidden) -> same shape. `emb` is the (B, time_embed_dim) condition;
    `kernel` the resolved attention kernel (see `attention.resolve_backend`; None: resolve here).

    Under sequence parallelism `hidden` is this rank's `shard` of the tokens and `text_length`
    counts the text tokens in it; only attention sees (through `shard`) the whole sequence.
    """
    layer, L = block.layer, text_length
    # 1. Per-token modulation: image chunks 0-5, text chunks 6-11, each (B, 1, hidden)
    (
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp,
        text_shift_msa, text_scale_msa, text_gate_msa, text_shift_mlp, text_scale_mlp, text_gate_mlp,
    ) = block.modulation(emb).unsqueeze(1).chunk(12, dim=2)  # fmt: skip

    # 2. Joint attention on the modulated, normalised sequence; gated residual
    normed = layer.input_layernorm(hidden)
    attention_input = modulate_segments(normed, L, (text_shift_msa, text_scale_msa), (shift_msa, scale_msa))
    attention_output = layer.attention(attention_input, block.query_norm, block.key_norm, rotary, shard, kernel)
    hidden = gated_residual_segments(hidden, attention_output, L, text_gate_msa, gate_msa)

    # 3. MLP on the modulated, normalised sequence; gated residual
    normed = layer.post_attention_layernorm(hidden)
    mlp_input = modulate_segments(normed, L, (text_shift_mlp, text_scale_mlp), (shift_mlp, scale_mlp))
    mlp_output = layer.mlp(mlp_input, gate=block.mlp_gate)
    return gated_residual_segments(hidden, mlp_output, L, text_gate_mlp, gate_mlp)


class AdaLNMixin(Mixin):
    """`adaLN_modulations.N` (SiLU, Linear(time_embed_dim, 12 hidden)) and, with `qk_ln`, one
    LayerNorm over head_dim for queries and one for keys per layer (eps 1e-6)."""

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        time_embed_dim: int,
        compressed_num_frames: int,
        qk_ln: bool = True,
        hidden_size_head: int | None = None,
        elementwise_affine: bool = True,
    ):
        super().__init__()
        self.num_layers = num_layers
        self.compressed_num_frames = compressed_num_frames
        self.qk_ln = qk_ln
        self.adaLN_modulations = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(time_embed_dim, 12 * hidden_size)) for _ in range(num_layers)
        )
        if qk_ln:
            if hidden_size_head is None:
                raise ValueError("AdaLNMixin with qk_ln needs hidden_size_head")
            norms = [nn.LayerNorm(hidden_size_head, eps=1e-6, elementwise_affine=elementwise_affine) for _ in range(2 * num_layers)]
            self.query_layernorm_list = nn.ModuleList(norms[:num_layers])
            self.key_layernorm_list = nn.ModuleList(norms[num_layers:])

    # No reinit: the official model adds this mixin without reinit, so the modulation Linears keep
    # nn.Linear's default init (its zero-init method is never called). Weights come from checkpoints.

    def block_modules(self, layer_id: int, mlp_gate: nn.Module | None = None) -> BlockModules:
        """Layer `layer_id`'s modules for `adaln_block`."""
        return BlockModules(
            self.transformer.layers[layer_id],
            self.adaLN_modulations[layer_id],
            self.query_layernorm_list[layer_id] if self.qk_ln else None,
            self.key_layernorm_list[layer_id] if self.qk_ln else None,
            mlp_gate,
        )

    def layer_forward(
        self,
        layer_id: int,
        hidden: torch.Tensor,
        emb: torch.Tensor,
        text_length: int,
        rotary: Rotary | None = None,
        mlp_gate: nn.Module | None = None,
        shard: SequenceShard | None = None,
    ) -> torch.Tensor:
        """Layer `layer_id` as one `adaln_block` (see there)."""
        return adaln_block(self.block_modules(layer_id, mlp_gate), hidden, emb, text_length, rotary, shard)

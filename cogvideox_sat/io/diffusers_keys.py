"""SAT DiT state dict -> diffusers `CogVideoXTransformer3DModel` state dict.

A rename table plus the few tensors that change shape: the fused query_key_value splits into
to_q/to_k/to_v, each layer's 12-chunk adaLN modulation splits into norm1 (attention: image
shift/scale/gate, then text) and norm2 (MLP), and 1.0 models' patch projection becomes a
Conv2d. Frozen or unused tables (the 2B sin-cos table, RoPE's unused position_embeddings) are
dropped; diffusers recomputes the former.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

# whole-tensor renames (SAT -> diffusers)
RENAMES: dict[str, str] = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "ofs_embed.0": "ofs_embedding.linear_1",
    "ofs_embed.2": "ofs_embedding.linear_2",
    "mixins.patch_embed.text_proj": "patch_embed.text_proj",
    "mixins.pos_embed.pos_embedding": "patch_embed.pos_embedding",
    "transformer.final_layernorm": "norm_final",
    "mixins.final_layer.norm_final": "norm_out.norm",
    "mixins.final_layer.adaLN_modulation.1": "norm_out.linear",
    "mixins.final_layer.linear": "proj_out",
}
LAYER_RENAMES: dict[str, str] = {
    "input_layernorm": "norm1.norm",
    "post_attention_layernorm": "norm2.norm",
    "attention.dense": "attn1.to_out.0",
    "mlp.dense_h_to_4h": "ff.net.0.proj",
    "mlp.dense_4h_to_h": "ff.net.2",
}
DROPPED = ("transformer.position_embeddings.weight",)
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "attention.query_key_value": ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
    "attention.dense": ("attn1.to_out.0",),
    "mlp.dense_h_to_4h": ("ff.net.0.proj",),
    "mlp.dense_4h_to_h": ("ff.net.2",),
}
# adaLN chunk order in SAT: image (shift, scale, gate) x (msa, mlp), then text the same
_NORM1_CHUNKS = (0, 1, 2, 6, 7, 8)
_NORM2_CHUNKS = (3, 4, 5, 9, 10, 11)


def sat_dit_to_diffusers(
    state_dict: Mapping[str, torch.Tensor], patch_size: tuple[int, int, int] = (1, 2, 2)
) -> dict[str, torch.Tensor]:
    """Convert a (LoRA-merged) SAT DiT state dict. `patch_size` (t, h, w): temporal 1 is a 1.0
    model (diffusers Conv2d patch projection; released 1.0 SAT weights already have that layout,
    current SAT code a Linear), 2 a 1.5 model (Linear). The I2V learnable table is
    told from the 2B sin-cos table by the RoPE-only `transformer.position_embeddings` beside it.
    Raises on keys it does not know."""
    out: dict[str, torch.Tensor] = {}
    sincos = "mixins.pos_embed.pos_embedding" in state_dict and not _has_learnable_table(state_dict)
    for key, value in state_dict.items():
        if key in DROPPED or (sincos and key == "mixins.pos_embed.pos_embedding"):
            continue
        target = _convert(key, value, tuple(patch_size), out)
        if target is None:
            raise KeyError(f"no diffusers equivalent for SAT key {key!r}")
    return out


def _has_learnable_table(state_dict: Mapping[str, torch.Tensor]) -> bool:
    # RoPE models keep transformer.position_embeddings; a pos_embedding beside it is the I2V table.
    return "transformer.position_embeddings.weight" in state_dict


def _convert(key: str, value: torch.Tensor, patch: tuple[int, ...], out: dict[str, torch.Tensor]) -> str | None:
    stem, _, leaf = key.rpartition(".")
    if key in RENAMES:  # parameters without a weight/bias leaf
        out[RENAMES[key]] = value
        return RENAMES[key]
    if stem in RENAMES:
        out[f"{RENAMES[stem]}.{leaf}"] = value
        return RENAMES[stem]
    if stem == "mixins.patch_embed.proj":
        if leaf == "weight" and patch[0] == 1 and value.dim() == 2:  # Linear over (c, ph, pw) == Conv2d [hidden, c, ph, pw]
            hidden, features = value.shape
            value = value.reshape(hidden, features // (patch[1] * patch[2]), patch[1], patch[2])
        out[f"patch_embed.proj.{leaf}"] = value
        return "patch_embed.proj"
    match = re.fullmatch(r"transformer\.layers\.(\d+)\.(.+)", stem)
    if match:
        i, name = match.groups()
        if name == "attention.query_key_value":
            for part, chunk in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                out[f"transformer_blocks.{i}.attn1.{part}.{leaf}"] = chunk
            return name
        if name in LAYER_RENAMES:
            out[f"transformer_blocks.{i}.{LAYER_RENAMES[name]}.{leaf}"] = value
            return name
        return None
    match = re.fullmatch(r"mixins\.adaln_layer\.(adaLN_modulations|query_layernorm_list|key_layernorm_list)\.(\d+)(\.1)?", stem)
    if match:
        kind, i, _ = match.groups()
        if kind == "query_layernorm_list":
            out[f"transformer_blocks.{i}.attn1.norm_q.{leaf}"] = value
        elif kind == "key_layernorm_list":
            out[f"transformer_blocks.{i}.attn1.norm_k.{leaf}"] = value
        else:
            chunks = value.chunk(12, dim=0)
            out[f"transformer_blocks.{i}.norm1.linear.{leaf}"] = torch.cat([chunks[c] for c in _NORM1_CHUNKS])
            out[f"transformer_blocks.{i}.norm2.linear.{leaf}"] = torch.cat([chunks[c] for c in _NORM2_CHUNKS])
        return kind
    return None



def sat_lora_to_diffusers(state_dict: Mapping[str, torch.Tensor], lora_alpha: float) -> dict[str, torch.Tensor]:
    """SAT adapters (`transformer.layers.N.<target>.matrix_{A,B}.i`) -> diffusers/PEFT
    `transformer_blocks.N.<module>.lora_{A,B}.weight`, `lora_alpha / r` folded into lora_B.
    Base weights are not included. Raises on adapter keys of unknown targets."""
    out: dict[str, torch.Tensor] = {}
    pattern = re.compile(r"transformer\.layers\.(\d+)\.(.+)\.matrix_([AB])\.(\d+)")
    for key, value in state_dict.items():
        match = pattern.fullmatch(key)
        if match is None:
            continue
        layer, target, kind, part = match.groups()
        if target not in LORA_TARGETS:
            raise KeyError(f"no diffusers module for LoRA target {target!r} ({key})")
        module = LORA_TARGETS[target][int(part)]
        if kind == "B":
            rank = value.shape[1]
            value = value * (lora_alpha / rank)
        out[f"transformer_blocks.{layer}.{module}.lora_{kind}.weight"] = value
    return out

"""SAT DiT state dict <-> diffusers `CogVideoXTransformer3DModel` state dict.

One rename table, read both ways (`sat_dit_to_diffusers`, `diffusers_dit_to_sat`), plus plus the few tensors that change shape: the fused query_key_value splits into
to_q/to_k/to_v, each layer's 12-chunk adaLN modulation splits into norm1 (attention: image
shift/scale/gate, then text) and norm2 (MLP), and 1.0 models' patch projection becomes a
Conv2d. Frozen or unused tables (the 2B sin-cos table, RoPE's unused position_embeddings) are
dropped; diffusers recomputes the former, and the way back leaves them to the caller, who knows
the model (`diffusers_import.derived_tensors`). LoRA adapters map with `LORA_TARGETS` both ways.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

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
_QKV = ("to_q", "to_k", "to_v")
# the same tables, diffusers -> SAT
_RENAMES_BACK = {v: k for k, v in RENAMES.items()}
_LAYER_RENAMES_BACK = {v: k for k, v in LAYER_RENAMES.items()}
_LORA_MODULES_BACK = {module: (target, part) for target, modules in LORA_TARGETS.items() for part, module in enumerate(modules)}


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


def diffusers_dit_to_sat(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `sat_dit_to_diffusers`: diffusers keys -> SAT DiT keys (no
    `model.diffusion_model.` prefix), to_q/to_k/to_v fused, norm1/norm2 modulations put back in
    SAT's 12-chunk order. Patch projections keep their layout (diffusers' 1.0 Conv2d is the
    released SAT 1.0 layout, 1.5 is a Linear in both). The tables `sat_dit_to_diffusers` drops
    are not made here. Raises `KeyError` naming the first key it does not know or an incomplete
    q/k/v or norm1/norm2 group."""
    out: dict[str, torch.Tensor] = {}
    groups: dict[str, dict[str, torch.Tensor]] = {}  # SAT key -> parts to fuse
    for key, value in state_dict.items():
        stem, _, leaf = key.rpartition(".")
        if key in _RENAMES_BACK:
            out[_RENAMES_BACK[key]] = value
        elif stem in _RENAMES_BACK:
            out[f"{_RENAMES_BACK[stem]}.{leaf}"] = value
        elif stem == "patch_embed.proj":
            out[f"mixins.patch_embed.proj.{leaf}"] = value
        elif match := re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", stem):
            i, name = match.groups()
            if name in _LAYER_RENAMES_BACK:
                out[f"transformer.layers.{i}.{_LAYER_RENAMES_BACK[name]}.{leaf}"] = value
            elif name in ("attn1.norm_q", "attn1.norm_k"):
                kind = "query" if name.endswith("q") else "key"
                out[f"mixins.adaln_layer.{kind}_layernorm_list.{i}.{leaf}"] = value
            elif name.startswith("attn1.") and name[6:] in _QKV:
                groups.setdefault(f"transformer.layers.{i}.attention.query_key_value.{leaf}", {})[name[6:]] = value
            elif name in ("norm1.linear", "norm2.linear"):
                groups.setdefault(f"mixins.adaln_layer.adaLN_modulations.{i}.1.{leaf}", {})[name[:5]] = value
            else:
                raise KeyError(f"no SAT equivalent for diffusers key {key!r}")
        else:
            raise KeyError(f"no SAT equivalent for diffusers key {key!r}")
    for key, parts in groups.items():
        out[key] = _fuse(key, parts)
    return out


def _fuse(key: str, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if "query_key_value" in key:
        _require(key, parts, _QKV)
        return torch.cat([parts[p] for p in _QKV])
    _require(key, parts, ("norm1", "norm2"))
    slots: list[torch.Tensor | None] = [None] * 12
    for name, order in (("norm1", _NORM1_CHUNKS), ("norm2", _NORM2_CHUNKS)):
        for slot, chunk in zip(order, parts[name].chunk(6, dim=0)):
            slots[slot] = chunk
    return torch.cat(slots)


def _require(key: str, parts: Mapping[str, torch.Tensor], names: Iterable[str]) -> None:
    missing = [n for n in names if n not in parts]
    if missing:
        raise KeyError(f"{key!r} needs diffusers' {', '.join(names)}; missing: {', '.join(missing)}")


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


def diffusers_lora_to_sat(adapters: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The inverse of `sat_lora_to_diffusers` without the scale: {diffusers module
    (`transformer_blocks.N.attn1.to_q`): (lora_A, lora_B)} -> (SAT adapters
    `transformer.layers.N.<target>.matrix_{A,B}.i`, SAT target names). Raises `KeyError` naming
    modules SAT's LoRA cannot wrap, and fused targets adapted only in part (SAT's
    query_key_value has one adapter per q/k/v: all three or none)."""
    out: dict[str, torch.Tensor] = {}
    unknown, seen = [], {}
    for module, (a, b) in adapters.items():
        match = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", module)
        if match is None or match.group(2) not in _LORA_MODULES_BACK:
            unknown.append(module)
            continue
        layer, name = match.groups()
        target, part = _LORA_MODULES_BACK[name]
        seen.setdefault((layer, target), set()).add(part)
        out[f"transformer.layers.{layer}.{target}.matrix_A.{part}"] = a
        out[f"transformer.layers.{layer}.{target}.matrix_B.{part}"] = b
    if unknown:
        supported = ", ".join(sorted({m for m in _LORA_MODULES_BACK}))
        raise KeyError(f"LoRA on modules SAT's LoRA does not wrap: {', '.join(sorted(unknown)[:8])} (supported per block: {supported})")
    for (layer, target), parts in sorted(seen.items()):
        if len(parts) != len(LORA_TARGETS[target]):
            want = ", ".join(LORA_TARGETS[target])
            raise KeyError(f"transformer_blocks.{layer}: SAT fuses {want} into {target}; the LoRA adapts only some of them")
    return out, sorted({t for _, t in seen})

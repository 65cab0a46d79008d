"""Tiny DiT configs that run on a CPU in milliseconds, shared by the tests and the benchmarks.

`tiny_config(variant)`: the official network_config format of one of the five CogVideoX
variants (same structure and target names as sat/configs/cogvideox_*.yaml), shrunk to hidden 64,
2 heads of 32, 2 layers, T5 width 32, 8 text tokens. `shrink_config(cfg)`: any network_config
(a released YAML's) cut down to the same toy widths, keeping its variant features.
"""

from __future__ import annotations

import copy
from typing import Any

TEXT_LENGTH = 8
TEXT_HIDDEN = 32
HIDDEN = 64
HEADS = 2
LAYERS = 2
TIME_EMBED = 32
VARIANTS = ("2b", "5b", "5b_i2v", "1.5", "1.5_i2v")


def _network(variant: str) -> dict[str, Any]:
    if variant not in VARIANTS:
        raise ValueError(f"tiny variant {variant!r}: choose one of {list(VARIANTS)}")
    i2v = variant.endswith("i2v")
    v15 = variant.startswith("1.5")
    pos_params: dict[str, Any] = {"text_length": TEXT_LENGTH}
    if variant != "2b":  # 3-D RoPE
        pos_params["hidden_size_head"] = HIDDEN // HEADS
        if variant == "5b_i2v":
            pos_params["learnable_pos_embed"] = True
        pos_target = "dit_video_concat.Rotary3DPositionEmbeddingMixin"
    else:  # the 2B YAML form: interpolation inside the position mixin's params
        pos_params.update(height_interpolation=1.875, width_interpolation=1.875)
        pos_target = "dit_video_concat.Basic3DPositionEmbeddingMixin"
    params: dict[str, Any] = {
        "time_embed_dim": TIME_EMBED,
        "elementwise_affine": True,
        "num_frames": 17 if v15 else 9,  # 5 / 3 compressed latent frames
        "time_compressed_rate": 4,
        "latent_width": 12,
        "latent_height": 8,
        "num_layers": LAYERS,
        "patch_size": [2, 2, 2] if v15 else 2,  # 1.0 YAMLs use the int form
        "in_channels": 8 if i2v else 4,
        "out_channels": 4,
        "hidden_size": HIDDEN,
        "adm_in_channels": 256,
        "num_attention_heads": HEADS,
        "transformer_args": {
            "checkpoint_activations": False,
            "vocab_size": 1,
            "max_sequence_length": 64,
            "layernorm_order": "pre",
            "skip_init": False,
            "model_parallel_size": 1,
            "is_decoder": False,
        },
        "modules": {
            "pos_embed_config": {"target": pos_target, "params": pos_params},
            "patch_embed_config": {
                "target": "dit_video_concat.ImagePatchEmbeddingMixin",
                "params": {"text_hidden_size": TEXT_HIDDEN},
            },
            "adaln_layer_config": {"target": "dit_video_concat.AdaLNMixin", "params": {"qk_ln": True}},
            "final_layer_config": {"target": "dit_video_concat.FinalLayerMixin"},
        },
    }
    if variant == "1.5_i2v":
        params["ofs_embed_dim"] = TIME_EMBED  # added to the time embedding: same width
    return {"target": "dit_video_concat.DiffusionTransformer", "params": params}


def tiny_config(variant: str, lora: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Official-format network_config of a tiny `variant`; `overrides` replace top-level params
    (a new hidden_size / num_attention_heads also resizes the RoPE head width); `lora` adds a
    lora_config block with these params."""
    cfg = _network(variant)
    cfg["params"].update(overrides)
    _match_rope_heads(cfg)
    if lora is not None:
        cfg["params"]["modules"]["lora_config"] = {"target": "sat.model.finetune.lora2.LoraMixin", "params": lora}
    return cfg


def shrink_config(cfg: dict[str, Any], heads: int = HEADS) -> dict[str, Any]:
    """A copy of `cfg` (any network_config) with toy widths: hidden 64 in `heads` heads, 2 layers,
    time embedding 32, 8 text tokens of width 32. Position and patch kinds, I2V channels, ofs and
    LoRA stay as they are; the latent grid is the caller's."""
    cfg = copy.deepcopy(cfg)
    p = cfg["params"]
    p.update(hidden_size=HIDDEN, num_layers=LAYERS, num_attention_heads=heads, time_embed_dim=TIME_EMBED)
    if p.get("ofs_embed_dim") is not None:
        p["ofs_embed_dim"] = TIME_EMBED
    mods = p["modules"]
    mods["pos_embed_config"].setdefault("params", {})["text_length"] = TEXT_LENGTH
    mods["patch_embed_config"].setdefault("params", {})["text_hidden_size"] = TEXT_HIDDEN
    _match_rope_heads(cfg)
    return cfg


def _match_rope_heads(cfg: dict[str, Any]) -> None:
    """RoPE tables are built per head: keep hidden_size_head = hidden_size / num_attention_heads."""
    p = cfg["params"]
    pos = p["modules"]["pos_embed_config"].get("params") or {}
    if "hidden_size_head" in pos:
        pos["hidden_size_head"] = p["hidden_size"] // p["num_attention_heads"]

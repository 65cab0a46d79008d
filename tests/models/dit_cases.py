"""Tiny configs of the five CogVideoX DiT variants, in the official network_config format.

Same structure and official target names as the released YAMLs (sat/configs/cogvideox_*.yaml),
shrunk to run in milliseconds: hidden 64, 2 heads of 32, 2 layers, T5 width 32, 8 text tokens.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

TEXT_LENGTH = 8
TEXT_HIDDEN = 32
HIDDEN = 64
HEADS = 2
LAYERS = 2
TIME_EMBED = 32


def _network(variant: str) -> dict[str, Any]:
    i2v = variant.endswith("i2v")
    v15 = variant.startswith("1.5")
    rope = variant != "2b"
    pos_params: dict[str, Any] = {"text_length": TEXT_LENGTH}
    if rope:
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


VARIANTS = ("2b", "5b", "5b_i2v", "1.5", "1.5_i2v")


def network_config(variant: str, lora: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Official-format network_config of a tiny `variant`; `lora` adds a lora_config block."""
    cfg = copy.deepcopy(_network(variant))
    cfg["params"].update(overrides)
    if lora is not None:
        cfg["params"]["modules"]["lora_config"] = {"target": "sat.model.finetune.lora2.LoraMixin", "params": lora}
    return cfg


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial values (the official init zeroes some outputs), keeping
    buffers (position tables) as built. Norm weights stay near 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.dim() == 1:  # norm weights
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(noise / max(p.shape[-1], 1) ** 0.5)
    return model


def inputs(variant: str, batch: int = 2, frames: int | None = None, height: int = 8, width: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    """Keyword inputs of a forward call (x, timesteps, context, and concat_images / ofs)."""
    gen = torch.Generator().manual_seed(seed)
    frames = frames if frames is not None else (4 if variant.startswith("1.5") else 3)
    kwargs = {
        "x": torch.randn(batch, frames, 4, height, width, generator=gen),
        "timesteps": torch.tensor([999.0, 31.0, 500.0, 7.0][:batch]),
        "context": torch.randn(batch, TEXT_LENGTH, TEXT_HIDDEN, generator=gen),
    }
    if variant.endswith("i2v"):
        kwargs["concat_images"] = torch.randn(batch, frames, 4, height, width, generator=gen)
    if variant == "1.5_i2v":
        kwargs["ofs"] = torch.tensor([2.0])
    return kwargs

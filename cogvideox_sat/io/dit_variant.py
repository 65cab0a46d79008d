"""Tell which CogVideoX DiT variant a checkpoint holds, and say so when it is not the one asked for.

A strict load of the wrong variant fails with hundreds of shape errors; converting it with the
wrong `--version` fails deep inside diffusers. Here a checkpoint's features (layers, width,
image input width, output head, position scheme, ofs embedding, LoRA) are compared with those
of the model the config describes, and every difference becomes one sentence with its fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .diffusers_configs import ConversionError
from .dit_keys import PATCH_PROJ
from .lora_state import has_lora

_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.")
SINCOS_TABLE = "mixins.pos_embed.pos_embedding"
LEGACY_TABLE = "transformer.position_embeddings.weight"
# tensors the conversion drops, so a checkpoint may lack them
OPTIONAL_KEYS = frozenset({SINCOS_TABLE, LEGACY_TABLE})


@dataclass(frozen=True)
class DitFeatures:
    layers: int
    hidden: int
    patch_in: int  # input features per token (in_channels x patch volume)
    head_out: int  # output features per token (out_channels x patch volume)
    text_width: int
    has_table: bool  # mixins.pos_embed.pos_embedding: 2B sin-cos table or 5B-I2V learned table
    has_legacy: bool  # transformer.position_embeddings.weight: only RoPE models carry it
    ofs: bool
    lora: bool

    @property
    def positions(self) -> str:
        if self.has_table:
            return "RoPE + learned table" if self.has_legacy else "sin-cos"
        return "RoPE"

    def describe(self, out_channels: int) -> str:
        """A short human name, e.g. 'CogVideoX1.5 image-to-video (42 layers, hidden 3072)'."""
        volume = max(self.head_out // max(out_channels, 1), 1)
        version = "CogVideoX1.5" if volume % 8 == 0 else "CogVideoX 1.0"
        i2v = self.patch_in == 2 * self.head_out
        kind = "image-to-video" if i2v else "text-to-video"
        if version.endswith("1.0") and self.positions == "sin-cos":
            version = "CogVideoX-2B-style"
        ofs = ", ofs embedding" if self.ofs else ""
        return f"{version} {kind}, {self.positions} positions{ofs} ({self.layers} layers, hidden {self.hidden})"


def dit_features(shapes: Mapping[str, torch.Size | tuple[int, ...]]) -> DitFeatures:
    """Features of a SAT DiT state dict (keys without the `model.diffusion_model.` prefix);
    values may be tensors or shapes."""
    shape = {k: tuple(getattr(v, "shape", v)) for k, v in shapes.items()}
    layers = {int(m.group(1)) for k in shape if (m := _LAYER.match(k))}
    proj = _first(shape, "mixins.patch_embed.proj.weight", "mixins.patch_embed.proj.original.weight")
    head = _first(shape, "mixins.final_layer.linear.weight")
    text = _first(shape, "mixins.patch_embed.text_proj.weight")
    hidden = _first(shape, "transformer.final_layernorm.weight", "mixins.final_layer.norm_final.weight")
    return DitFeatures(
        layers=len(layers),
        hidden=hidden[0] if hidden else 0,
        patch_in=math.prod(proj[1:]) if proj else 0,
        head_out=head[0] if head else 0,
        text_width=text[1] if text else 0,
        has_table=SINCOS_TABLE in shape,
        has_legacy=LEGACY_TABLE in shape,
        ofs="ofs_embed.0.weight" in shape,
        lora=has_lora(shape),
    )


def check_dit_checkpoint(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], out_channels: int, what: str, source: str = "the checkpoint"
) -> None:
    """Raise `ConversionError` when `state` is not the DiT `expected` (a state dict of the model
    `what` describes, e.g. built on the meta device): features first, then any key left over."""
    found, want = dit_features(state), dit_features(expected)
    reasons = _feature_differences(found, want)
    if not reasons:
        missing = sorted(k for k in expected if k not in state and k not in OPTIONAL_KEYS)
        unexpected = sorted(k for k in state if k not in expected and k not in OPTIONAL_KEYS)
        wrong = sorted(k for k in state if k in expected and not _same_layout(k, state[k], expected[k]))
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)):
            if keys:
                reasons.append(f"{len(keys)} tensors {title}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
    if reasons:
        lines = [f"{source} does not fit {what}:"]
        lines += [f"  - {r}" for r in reasons]
        lines.append(f"  It looks like: {found.describe(out_channels)}; {what} is: {want.describe(out_channels)}.")
        lines.append("  Convert with the model config it was trained with (--config), or the matching --version / --i2v.")
        raise ConversionError("\n".join(lines))


def _feature_differences(found: DitFeatures, want: DitFeatures) -> list[str]:
    out: list[str] = []
    if (found.layers, found.hidden) != (want.layers, want.hidden):
        out.append(f"model size: {found.layers} layers of width {found.hidden}, expected {want.layers} of width {want.hidden}")
    if found.head_out != want.head_out:
        ratio = found.head_out / max(want.head_out, 1)
        hint = {
            2.0: " (temporal patch 2: a CogVideoX1.5 checkpoint, --version 1.5)",
            0.5: " (no temporal patch: a CogVideoX 1.0 checkpoint, --version 1.0)",
        }
        out.append(f"output head: {found.head_out} features per token, expected {want.head_out}{hint.get(ratio, '')}")
    elif found.patch_in != want.patch_in:
        ratio = found.patch_in / max(want.patch_in, 1)
        hint = {
            2.0: " (image latents concatenated: an image-to-video checkpoint, add --i2v)",
            0.5: " (a text-to-video checkpoint, drop --i2v)",
        }
        out.append(f"patch embedding: {found.patch_in} input features, expected {want.patch_in}{hint.get(ratio, '')}")
    if found.text_width != want.text_width:
        out.append(f"text projection: T5 width {found.text_width}, expected {want.text_width}")
    if found.ofs != want.ofs:
        state = "present (CogVideoX1.5 image-to-video)" if found.ofs else "absent (expected for CogVideoX1.5 image-to-video)"
        out.append(f"ofs embedding {state}")
    if _positions_conflict(found, want):
        out.append(f"positions: {found.positions}, expected {want.positions}")
    if found.lora and not want.lora:
        out.append(
            "holds LoRA adapters (matrix_A/matrix_B): export them with tools/export_sat_lora_weight.py, "
            "or merge them first (--lora_alpha / a --config with lora_config)"
        )
    return out


def _positions_conflict(found: DitFeatures, want: DitFeatures) -> bool:
    # The conversion drops the sin-cos table and RoPE's legacy table, so a checkpoint may lack
    # them: only a table that is present where it cannot be, or a missing learned table, conflicts.
    if want.has_table and want.has_legacy:  # 5B-I2V: the learned table is needed
        return not found.has_table
    if want.has_table:  # sin-cos
        return found.has_legacy
    return found.has_table  # RoPE without a table


def _same_layout(key: str, found: torch.Tensor, want: torch.Tensor) -> bool:
    if key == PATCH_PROJ and found.dim() == 4:  # released 1.0 weights: Conv2d layout, same numbers
        return found.numel() == want.numel()
    return tuple(found.shape) == tuple(want.shape)


def _first(shape: Mapping[str, tuple[int, ...]], *keys: str) -> tuple[int, ...] | None:
    for key in keys:
        if key in shape:
            return shape[key]
    return None

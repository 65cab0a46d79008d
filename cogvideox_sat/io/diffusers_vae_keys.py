"""SAT 3D VAE state dict (`3d-vae.pt`) -> diffusers `AutoencoderKLCogVideoX` state dict.

The tensors are the same; only names change: `down.L.block.B` -> `down_blocks.L.resnets.B`,
`mid.block_{1,2}` -> `mid_block.resnets.{0,1}`, `nin_shortcut` -> `conv_shortcut`,
`downsample`/`upsample` -> `downsamplers.0`/`upsamplers.0`, and the decoder's levels are
numbered from the lowest resolution in diffusers (`up_blocks.0` is SAT's `up.{L-1}`).
Training-only tensors under `loss.` (discriminator, LPIPS) are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

DROPPED_PREFIXES = ("loss.",)
# (pattern on the SAT key, replacement) applied in order; {up} is filled per key
_RULES: tuple[tuple[str, str], ...] = (
    (r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
    (r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0."),
    (r"^(encoder|decoder)\.mid\.block_1\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.mid\.block_2\.", r"\1.mid_block.resnets.1."),
    (r"\.nin_shortcut\.", ".conv_shortcut."),
)
_UP = re.compile(r"^decoder\.up\.(\d+)\.(block\.(\d+)|upsample)\.")
_KEPT = re.compile(r"^(encoder|decoder)\.(conv_in|conv_out|norm_out)\.")


def vae_levels(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Number of resolution levels (len(ch_mult)) of a SAT VAE state dict."""
    levels = {int(m.group(1)) for k in state_dict if (m := re.match(r"^decoder\.up\.(\d+)\.", k))}
    if not levels:
        raise KeyError("no decoder.up.* keys: not a CogVideoX SAT VAE state dict")
    return max(levels) + 1


def sat_vae_to_diffusers(state_dict: Mapping[str, torch.Tensor], levels: int | None = None) -> dict[str, torch.Tensor]:
    """Rename every tensor of a SAT VAE state dict (keys `encoder.*`, `decoder.*`, `loss.*`).
    `levels`: len(ch_mult), read from the keys when None. Raises on keys it does not know."""
    levels = vae_levels(state_dict) if levels is None else levels
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES):
            continue
        new = _rename(key, levels)
        if new is None:
            raise KeyError(f"no diffusers equivalent for SAT VAE key {key!r}")
        out[new] = value
    return out


def _rename(key: str, levels: int) -> str | None:
    match = _UP.match(key)
    if match:
        level, part, block = match.groups()
        inner = f"resnets.{block}" if part.startswith("block") else "upsamplers.0"
        new = f"decoder.up_blocks.{levels - 1 - int(level)}.{inner}." + key[match.end() :]
        return new.replace(".nin_shortcut.", ".conv_shortcut.")
    new = key
    for pattern, replacement in _RULES:
        new = re.sub(pattern, replacement, new)
    known = new != key or _KEPT.match(key)
    return new if known else None

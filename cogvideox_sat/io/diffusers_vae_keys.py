"""SAT 3D VAE state dict (`3d-vae.pt`) <-> diffusers `AutoencoderKLCogVideoX` state dict.

The tensors are the same; only names change: `down.L.block.B` -> `down_blocks.L.resnets.B`,
`mid.block_{1,2}` -> `mid_block.resnets.{0,1}`, `nin_shortcut` -> `conv_shortcut`,
`downsample`/`upsample` -> `downsamplers.0`/`upsamplers.0`, and the decoder's levels are
numbered from the lowest resolution in diffusers (`up_blocks.0` is SAT's `up.{L-1}`).
One table of prefix pairs serves both directions. Training-only tensors under `loss.`
(discriminator, LPIPS) are dropped on the way to diffusers and cannot come back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

DROPPED_PREFIXES = ("loss.",)
# (SAT prefix, diffusers prefix): {l} a level, {b} a block, {u} the decoder level counted from
# the lowest resolution (levels - 1 - l), {side} encoder or decoder
PREFIXES: tuple[tuple[str, str], ...] = (
    ("encoder.down.{l}.block.{b}.", "encoder.down_blocks.{l}.resnets.{b}."),
    ("encoder.down.{l}.downsample.", "encoder.down_blocks.{l}.downsamplers.0."),
    ("{side}.mid.block_1.", "{side}.mid_block.resnets.0."),
    ("{side}.mid.block_2.", "{side}.mid_block.resnets.1."),
    ("decoder.up.{l}.block.{b}.", "decoder.up_blocks.{u}.resnets.{b}."),
    ("decoder.up.{l}.upsample.", "decoder.up_blocks.{u}.upsamplers.0."),
    ("{side}.conv_in.", "{side}.conv_in."),
    ("{side}.conv_out.", "{side}.conv_out."),
    ("{side}.norm_out.", "{side}.norm_out."),
)
INNER = ((".nin_shortcut.", ".conv_shortcut."),)  # inside a block, after the prefix
_FIELDS = {"l": r"(?P<l>\d+)", "b": r"(?P<b>\d+)", "u": r"(?P<u>\d+)", "side": r"(?P<side>encoder|decoder)"}


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(_FIELDS[p[1:-1]] if p.startswith("{") else re.escape(p) for p in parts))


_TO_DIFFUSERS = [(_pattern(sat), hf) for sat, hf in PREFIXES]
_TO_SAT = [(_pattern(hf), sat) for sat, hf in PREFIXES]


def vae_levels(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Number of resolution levels (len(ch_mult)) of a SAT or diffusers VAE state dict."""
    levels = {int(m.group(1)) for k in state_dict if (m := re.match(r"^decoder\.up(?:_blocks)?\.(\d+)\.", k))}
    if not levels:
        raise KeyError("no decoder.up.* / decoder.up_blocks.* keys: not a CogVideoX VAE state dict")
    return max(levels) + 1


def sat_vae_to_diffusers(state_dict: Mapping[str, torch.Tensor], levels: int | None = None) -> dict[str, torch.Tensor]:
    """Rename every tensor of a SAT VAE state dict (keys `encoder.*`, `decoder.*`, `loss.*`).
    `levels`: len(ch_mult), read from the keys when None. Raises on keys it does not know."""
    levels = vae_levels(state_dict) if levels is None else levels
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES):
            continue
        new = _rename(key, levels, _TO_DIFFUSERS, inner=0)
        if new is None:
            raise KeyError(f"no diffusers equivalent for SAT VAE key {key!r}")
        out[new] = value
    return out


def diffusers_vae_to_sat(state_dict: Mapping[str, torch.Tensor], levels: int | None = None) -> dict[str, torch.Tensor]:
    """The inverse of `sat_vae_to_diffusers` (the `loss.*` tensors it drops do not come back).
    Raises on keys it does not know."""
    levels = vae_levels(state_dict) if levels is None else levels
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _rename(key, levels, _TO_SAT, inner=1)
        if new is None:
            raise KeyError(f"no SAT equivalent for diffusers VAE key {key!r}")
        out[new] = value
    return out


def _rename(key: str, levels: int, rules: list[tuple[re.Pattern[str], str]], inner: int) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match is None:
            continue
        fields = match.groupdict()
        if "l" in fields and "{u}" in template:
            fields["u"] = str(levels - 1 - int(fields["l"]))
        if "u" in fields and "{l}" in template:
            fields["l"] = str(levels - 1 - int(fields["u"]))
        rest = key[match.end() :]
        for pair in INNER:
            rest = ("." + rest).replace(pair[inner], pair[1 - inner])[1:]
        return template.format(**fields) + rest
    return None

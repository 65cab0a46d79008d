"""Loading the official `3d-vae.pt` (or a safetensors copy) strictly, with a report.

The official file is a dict with a `state_dict` whose keys are `encoder.*`, `decoder.*` and,
in training checkpoints, `loss.*` (discriminator/LPIPS), which configs drop with
`ignore_keys: ['loss']` (key prefixes). Anything else missing or unexpected is an error.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    path: str
    loaded: int
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        lines = [f"{self.path}: {self.loaded} tensors loaded, {len(self.ignored)} ignored by ignore_keys"]
        if self.missing:
            lines.append(f"missing keys: {few(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected keys: {few(self.unexpected)}")
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a VAE checkpoint: `.safetensors`, or a torch file holding `state_dict` (or the dict itself)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds objects other than tensors and is not loaded (pickle can run code). "
            "Re-save its 'state_dict' alone, or convert it to .safetensors."
        ) from err
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return dict(obj)


def load_vae_state(module: nn.Module, path: str | Path, ignore_keys: Iterable[str] = ()) -> LoadReport:
    """Load `path` into `module` strictly after dropping keys that start with an ignore prefix."""
    state = read_state_dict(path)
    prefixes = tuple(ignore_keys)
    ignored = sorted(k for k in state if prefixes and k.startswith(prefixes))
    kept = {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}
    expected = module.state_dict()
    report = LoadReport(
        path=str(path),
        loaded=len(kept),
        ignored=ignored,
        missing=sorted(set(expected) - set(kept)),
        unexpected=sorted(set(kept) - set(expected)),
    )
    if not report.ok:
        raise RuntimeError(f"VAE checkpoint does not match the model:\n{report}")
    module.load_state_dict(kept, strict=True)
    log.info("%s", report)
    return report

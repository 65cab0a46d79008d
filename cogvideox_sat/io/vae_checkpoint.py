"""Loading the official `3d-vae.pt` (or a safetensors copy) strictly, with a report.

The official file is a dict with a `state_dict` whose keys are `encoder.*`, `decoder.*` and,
in training checkpoints, `loss.*` (discriminator/LPIPS), which configs drop with
`ignore_keys: ['loss']` (key prefixes). Anything else missing or unexpected is an error.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from .load_report import LoadReport, load_state_dict_with_report

log = logging.getLogger(__name__)


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
    """Load `path` into `module` strictly after dropping keys that start with an ignore prefix;
    the report counts the dropped keys per prefix. Raises CheckpointMismatchError listing every
    missing, unexpected or mis-shaped key."""
    state = read_state_dict(path)
    prefixes = tuple(ignore_keys)
    report = LoadReport(source=str(path))
    kept = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            kept[key] = value
        else:
            report.ignored[prefix] = report.ignored.get(prefix, 0) + 1
    load_state_dict_with_report(module, kept, strict=True, report=report)
    log.info("%s", report.summary())
    return report

"""Reading a run folder: the one place that knows its layout.

A run folder (ours or the official SAT one) holds `latest` (the tag of the newest complete
checkpoint), one sub-folder per tag (`<iteration>/mp_rank_00_model_states.pt`, `<n>-ema`, ...)
and, for our runs, `training_config.yaml` (the merged config the run trained with). Training,
sampling and every tool read these through here; writing `latest` durably is the training
checkpoint's job (training/checkpoint.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

LATEST = "latest"
TRAINING_CONFIG = "training_config.yaml"  # written by our training next to `latest`


def read_latest(folder: str | os.PathLike[str]) -> Optional[str]:
    """The tag `latest` names, or None without a (non-empty) `latest` file."""
    path = Path(folder) / LATEST
    if not path.is_file():
        return None
    tag = path.read_text().strip()
    return tag or None


def iteration_tags(folder: str | os.PathLike[str]) -> list[int]:
    """The plain iteration sub-folders (`10`, `20`, ...) of a run, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def find_training_config(path: str | os.PathLike[str]) -> Optional[Path]:
    """The run's `training_config.yaml` for a checkpoint path (run folder, iteration folder or
    model-states file), or None."""
    path = Path(path).resolve()
    for folder in (path, *path.parents[:2]):
        if (folder / TRAINING_CONFIG).is_file():
            return folder / TRAINING_CONFIG
    return None


def read_training_config(folder: str | os.PathLike[str]) -> Optional[Any]:
    """The run folder's own `training_config.yaml` as an OmegaConf node, or None."""
    from omegaconf import OmegaConf

    config = Path(folder) / TRAINING_CONFIG
    return OmegaConf.load(config) if config.is_file() else None

"""Loading released or trained transformer weights into the engine before training or sampling."""

from __future__ import annotations

import os
from typing import Any

import torch

from cogvideox_sat.io.load_report import LoadReport
from cogvideox_sat.io.sat_checkpoint import DIT_PREFIX, load_sat_checkpoint, resolve_checkpoint_file


def is_our_training_run(folder: str | os.PathLike) -> bool:
    """Whether `folder` was written by our trainer: its states then carry RNG and data position."""
    try:
        path = resolve_checkpoint_file(folder)
    except FileNotFoundError:
        return False
    # our own run folder: the client state holds numpy RNG objects, so full unpickling is needed
    blob = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return isinstance(blob, dict) and "rng" in blob and "data" in blob


def load_transformer(engine: Any, folder: str | os.PathLike, lenient: bool = False) -> LoadReport:
    """Load the DiT weights of a SAT checkpoint folder (`latest` + `<tag>/mp_rank_00_model_states.pt`).

    VAE and T5 keys of full fine-tune checkpoints are ignored (they load from their own files);
    LoRA adapters absent from a base checkpoint keep their fresh init. Anything else that does not
    match raises, unless `lenient` (the official `force_train`).
    """
    return load_sat_checkpoint(engine.model.diffusion_model, folder, prefix=DIT_PREFIX, strict=not lenient, weights_only=False)

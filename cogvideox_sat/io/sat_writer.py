"""Write a state dict in the released SAT layout, which SAT, the official tools and ours read.

`<folder>/latest` holds the iteration tag and `<folder>/<tag>/mp_rank_00_model_states.pt` is
`{"module": state_dict}` (engine keys: `model.diffusion_model.*` for the DiT).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .run_folder import LATEST
from .sat_checkpoint import MODEL_STATES


def write_sat_checkpoint(state: Mapping[str, torch.Tensor], folder: str | os.PathLike[str], iteration: int | str = 1) -> Path:
    """Save `state` (engine keys) as iteration `iteration` of `folder`; returns the file written.
    Tensors are saved contiguous and unshared, so the file holds exactly these tensors."""
    folder = Path(folder)
    target = folder / str(iteration) / MODEL_STATES
    target.parent.mkdir(parents=True, exist_ok=True)
    module = {k: v.detach().contiguous().clone() if is_view(v) else v.detach().contiguous() for k, v in state.items()}
    torch.save({"module": module}, target)
    (folder / LATEST).write_text(str(iteration))
    return target


def is_view(tensor: torch.Tensor) -> bool:
    """Whether `tensor` uses only part of its storage (saving it would save the whole storage)."""
    return tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size()

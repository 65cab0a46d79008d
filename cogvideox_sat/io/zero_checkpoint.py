"""Consolidate a DeepSpeed ZeRO-2/3 checkpoint into one full-precision state dict.

Under ZeRO the fp32 master weights live split across `zero_pp_rank_*_optim_states.pt`; the
`module` in `mp_rank_00_model_states.pt` is the training-precision copy (bf16 in bf16 runs;
under ZeRO-3 only placeholders). DeepSpeed's own `get_fp32_state_dict_from_zero_checkpoint`
reassembles the masters and adds the buffers; this module only locates the tag and casts.
Reading these files unpickles DeepSpeed objects (weights_only=False): trusted checkpoints only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .diffusers_configs import ConversionError
from .run_folder import read_latest
from .sat_writer import is_view

OPTIM_GLOB = "*_optim_states.pt"


def zero_tag_folder(checkpoint_dir: str | os.PathLike[str], tag: str | None = None) -> tuple[Path, str]:
    """(run folder, tag) for a run folder (tag from `latest` unless given) or an iteration folder."""
    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    latest = read_latest(path)
    if tag is None and latest is None and any(path.glob(OPTIM_GLOB)):
        return path.parent, path.name  # an iteration folder
    if tag is None:
        if latest is None:
            raise FileNotFoundError(f"{path} has no 'latest' file; pass the tag (-t)")
        tag = latest
    if not (path / tag).is_dir():
        raise FileNotFoundError(f"{path / tag} does not exist")
    return path, tag


def is_zero_checkpoint(checkpoint_dir: str | os.PathLike[str], tag: str | None = None) -> bool:
    """Whether the iteration folder holds ZeRO optimizer partitions."""
    try:
        run, tag = zero_tag_folder(checkpoint_dir, tag)
    except FileNotFoundError:
        return False
    return any((run / tag).glob(OPTIM_GLOB))


def consolidate_zero_checkpoint(
    checkpoint_dir: str | os.PathLike[str],
    tag: str | None = None,
    dtype: torch.dtype = torch.float32,
    exclude_frozen_parameters: bool = False,
) -> dict[str, torch.Tensor]:
    """The full state dict of a ZeRO-2/3 checkpoint (trained parameters from the fp32 masters,
    plus buffers and any frozen parameters saved), cast to `dtype`. Keys are the engine's
    (`model.diffusion_model.*`)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    run, tag = zero_tag_folder(checkpoint_dir, tag)
    if not any((run / tag).glob(OPTIM_GLOB)):
        raise ConversionError(f"{run / tag} holds no ZeRO optimizer partitions ({OPTIM_GLOB}); read its model states directly")
    # lazy (ZeRO-3): each tensor is gathered alone and cast before the next, keeping the peak
    # low. ZeRO-1/2 tensors are views of one flat buffer: each gets its own storage, which
    # safetensors needs (and then the flat buffer can go).
    lazy = get_fp32_state_dict_from_zero_checkpoint(
        str(run), tag=tag, exclude_frozen_parameters=exclude_frozen_parameters, lazy_mode=True
    )
    state: dict[str, torch.Tensor] = {}
    for key in list(lazy):
        tensor = lazy.pop(key).contiguous()
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.clone() if is_view(tensor) else tensor
    return state

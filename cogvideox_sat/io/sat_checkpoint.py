"""Read checkpoints in the released SAT layout and load them into a model with a report.

Layout (SwissArmyTransformer / DeepSpeed): `<load_dir>/latest` holds the iteration tag, the
weights are `<load_dir>/<tag>/mp_rank_00_model_states.pt`, a dict whose `module` entry is the
state dict of the whole engine — DiT keys prefixed `model.diffusion_model.`, full fine-tunes
also `first_stage_model.*` and `conditioner.*`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .dit_keys import adapt_dit_state_dict
from .load_report import LoadReport, load_state_dict_with_report
from .run_folder import read_latest

MODEL_STATES = "mp_rank_00_model_states.pt"
# DeepSpeed names the module file differently under ZeRO-3 (one per data-parallel rank; rank 0's
# holds the non-partitioned states); both layouts are readable.
MODEL_STATES_FILES = (MODEL_STATES, "zero_pp_rank_0_mp_rank_00_model_states.pt")


# A run trained with an EMA optimizer (sat.ops.FusedEmaAdam) saves the EMA weights of iteration
# <n> as tag `<n>-ema` beside `<n>`; `latest` keeps naming `<n>`.
EMA_SUFFIX = "-ema"


def ema_checkpoint_folder(run: str | os.PathLike[str]) -> Path:
    """`<run>/<latest>-ema`: the EMA weights of a run folder's newest checkpoint. A folder that
    already holds a model-states file (e.g. `<run>/<n>-ema` itself) is returned as it is."""
    path = Path(run)
    if states_file_in(path) is not None or path.name.endswith(EMA_SUFFIX):
        return path
    latest = read_latest(path)
    if latest is None:
        raise FileNotFoundError(f"--ema: {path} has no `latest` file; give the run folder or its <n>-ema folder")
    folder = path / f"{latest}{EMA_SUFFIX}"
    if states_file_in(folder) is None:
        raise FileNotFoundError(
            f"--ema: {folder} does not exist; the run was not trained with an EMA optimizer "
            "(deepspeed.optimizer.type: sat.ops.FusedEmaAdam) or its EMA was not saved"
        )
    return folder


def ema_weights(base: str | None, lora: str | None, ema: bool, verbose: bool = True) -> tuple[str | None, str | None]:
    """(base, lora) checkpoint paths with `--ema` applied: the run folder of ours (the LoRA run when
    given, else the base) replaced by its `<latest>-ema` folder."""
    if not ema:
        return base, lora
    if lora:
        lora = str(ema_checkpoint_folder(lora))
    elif base:
        base = str(ema_checkpoint_folder(base))
    if verbose:
        print(f"--ema: using the EMA weights of {lora or base}", flush=True)
    return base, lora


def states_file_in(folder: Path) -> Path | None:
    """The model-states file inside an iteration folder, under either DeepSpeed name."""
    return next((folder / name for name in MODEL_STATES_FILES if (folder / name).is_file()), None)
DIT_PREFIX = "model.diffusion_model."


def _numpy_array_globals() -> list:
    """What DeepSpeed/SAT checkpoints need beyond tensors: numpy arrays (the saved numpy RNG
    state). Rebuilding an array runs no file-supplied code, so they are safe to allow."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
        _reconstruct,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),  # pickled under numpy 1
    ]


def resolve_checkpoint_file(load_dir: str | os.PathLike[str], iteration: int | str | None = None) -> Path:
    """The model-states file of `load_dir`: `<dir>/<latest or iteration>/mp_rank_00_model_states.pt`;
    also accepts the iteration folder or the file itself."""
    path = Path(load_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    if iteration is None and (path / MODEL_STATES).is_file():
        return path / MODEL_STATES
    if iteration is None:
        iteration = read_latest(path)
        if iteration is None:
            raise FileNotFoundError(f"{path} has no 'latest' file and no {MODEL_STATES}; pass the iteration explicitly")
    candidate = states_file_in(path / str(iteration))
    if candidate is None:
        found = sorted({p.parent.name for name in MODEL_STATES_FILES for p in path.glob(f"*/{name}")})
        raise FileNotFoundError(f"{path / str(iteration) / MODEL_STATES} does not exist; iterations present: {found or 'none'}")
    return candidate


def read_module_state(path: str | os.PathLike[str], weights_only: bool = True) -> dict[str, torch.Tensor]:
    """The `module` state dict of a model-states file (memory-mapped when the format allows).

    `weights_only=True` refuses pickled Python objects other than tensors, containers and numpy
    arrays (DeepSpeed client states hold the numpy RNG state); anything else needs
    `weights_only=False`, which can run code from the file: trusted files only.
    """
    with torch.serialization.safe_globals(_numpy_array_globals()):
        try:
            states = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            states = torch.load(path, map_location="cpu", weights_only=weights_only)  # legacy (non-zip) format
    if isinstance(states, dict) and "module" in states:
        states = states["module"]
    if not isinstance(states, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(states).__name__})")
    return states


def split_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(keys under `prefix` with it stripped, {other top-level prefix: count})."""
    if not prefix:
        return dict(state_dict), {}
    ours = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    others = Counter(k.split(".", 1)[0] + "." for k in state_dict if not k.startswith(prefix))
    return ours, dict(others)


def load_sat_checkpoint(
    model: nn.Module,
    load_dir: str | os.PathLike[str],
    prefix: str = DIT_PREFIX,
    strict: bool = True,
    iteration: int | str | None = None,
    weights_only: bool = True,
    required: Iterable[str] | None = None,
) -> LoadReport:
    """Load a released/SAT-saved checkpoint into `model` (a `DiffusionTransformer` by default).

    `load_dir` may also be a diffusers transformer (or pipeline) folder: converted in memory with
    the same report; the tables diffusers does not store keep the model's values.
    Keys under `prefix` are loaded, other sub-models' keys are counted and ignored. Conv-layout
    patch embeddings are reshaped and base weights go into LoRA-wrapped layers (see
    `dit_keys`). `required`: the model keys the checkpoint must hold when it holds only some
    (e.g. the adapters of a LoRA-only save, loaded over base weights); default all.
    Strict (default): raises `CheckpointMismatchError` listing every missing, unexpected or
    mis-shaped key before touching the model; lenient: loads what matches.
    """
    from .diffusers_import import derived_keys, is_diffusers_transformer, read_transformer

    derived: set[str] = set()
    if is_diffusers_transformer(load_dir):  # converted in memory; the DiT keeps its own derived tables
        imported = read_transformer(load_dir)
        source, state, ignored = imported.describe(), imported.state, {}
        derived = derived_keys(model.state_dict(), state)
    else:
        path = resolve_checkpoint_file(load_dir, iteration)
        source = str(path)
        state, ignored = split_prefix(read_module_state(path, weights_only=weights_only), prefix)
    adapted, renames, keep_ok = adapt_dit_state_dict(state, model.state_dict())
    keep_ok |= derived
    report = LoadReport(source=source, remapped=renames, ignored=ignored)
    return load_state_dict_with_report(model, adapted, strict=strict, keep_ok=keep_ok, required=required, report=report)

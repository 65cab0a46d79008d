"""Training checkpoints in the official SAT layout, written atomically, resumable exactly.

Layout (what official tools and released weights use): `<dir>/latest` holds the iteration tag and
`<dir>/<tag>/mp_rank_00_model_states.pt` holds `{"module": state_dict, ...}`. DeepSpeed writes the
tag folder (module, optimizer / ZeRO partitions, LR scheduler) and our `client_state` (iteration,
RNG states, data position); we then move `latest` with an atomic rename, so a save killed halfway
leaves the previous checkpoint as the one that loads. With an EMA optimizer (`training.ema`) the
EMA weights go to `<dir>/<tag>-ema/` before `latest` moves; `latest` keeps naming `<tag>`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist

from cogvideox_sat.training.ema import EMA_SUFFIX, WeightEma, ema_tag
from cogvideox_sat.training.reshard import UNIVERSAL_DIR, read_states

LATEST = "latest"
MODEL_STATES = "mp_rank_00_model_states.pt"


class NonFiniteWeightsError(RuntimeError):
    """Trainable weights hold NaN/Inf: such a checkpoint is never written."""


def read_latest(folder: str | os.PathLike) -> Optional[str]:
    path = Path(folder) / LATEST
    if not path.is_file():
        return None
    tag = path.read_text().strip()
    return tag or None


def write_latest(folder: str | os.PathLike, tag: str) -> None:
    """Point `latest` at `tag` with a rename, which is atomic on POSIX file systems."""
    folder = Path(folder)
    tmp = folder / f".{LATEST}.tmp"
    with open(tmp, "w") as f:
        f.write(tag)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / LATEST)


def iteration_tags(folder: str | os.PathLike) -> list[int]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def prune_old(folder: str | os.PathLike, keep_last: Optional[int]) -> list[int]:
    """Delete all but the newest `keep_last` iteration folders (never the one `latest` names)."""
    if not keep_last or keep_last < 1:
        return []
    latest = read_latest(folder)
    tags = iteration_tags(folder)
    removed = []
    for tag in tags[:-keep_last]:
        if str(tag) != latest:
            shutil.rmtree(Path(folder) / str(tag), ignore_errors=True)
            shutil.rmtree(Path(folder) / f"{tag}{EMA_SUFFIX}", ignore_errors=True)
            shutil.rmtree(Path(folder) / UNIVERSAL_DIR / str(tag), ignore_errors=True)  # its converted copy, if any
            removed.append(tag)
    return removed


def assert_finite_trainable(module: torch.nn.Module) -> None:
    bad = [n for n, p in module.named_parameters() if p.requires_grad and not torch.isfinite(p.detach()).all()]
    if bad:
        raise NonFiniteWeightsError(
            f"{len(bad)} trainable tensors hold NaN/Inf (first: {bad[0]}); refusing to overwrite the last good checkpoint"
        )


def save_checkpoint(
    ds_engine: Any,
    folder: str | os.PathLike,
    iteration: int,
    client_state: dict[str, Any],
    keep_last: Optional[int] = None,
    trainable_only: bool = True,
    ema: Optional[WeightEma] = None,
) -> Path:
    """Save iteration `iteration` under `folder` (and its EMA weights); every rank must call this."""
    assert_finite_trainable(ds_engine.module)
    folder = Path(folder)
    tag = str(iteration)
    ds_engine.save_checkpoint(
        str(folder),
        tag=tag,
        client_state={**client_state, "iteration": iteration},
        save_latest=False,
        exclude_frozen_parameters=trainable_only,
    )
    if dist.is_initialized():
        dist.barrier()
    if ema is not None:
        main = not dist.is_initialized() or dist.get_rank() == 0
        weights = read_states(folder, tag)["module"] if main else {}
        ema.save(weights, folder / ema_tag(tag) / MODEL_STATES, iteration)
        if dist.is_initialized():
            dist.barrier()
    if not dist.is_initialized() or dist.get_rank() == 0:
        write_latest(folder, tag)
        prune_old(folder, keep_last)
    if dist.is_initialized():
        dist.barrier()
    return folder / tag


def resume_checkpoint(ds_engine: Any, folder: str | os.PathLike, load_dir: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """Load module, optimizer, scheduler and our client state from `folder/latest`.

    `load_dir`: where DeepSpeed reads `<tag>` from when it is not `folder` (the universal copy made
    by `reshard.prepare_resume` for another process count).
    """
    tag = read_latest(folder)
    if tag is None:
        raise FileNotFoundError(f"{folder}: no `latest` file, nothing to resume from")
    # Frozen weights (VAE, T5, the base of a LoRA model) are not in our checkpoints: load non-strict,
    # then check that every trainable tensor was restored.
    path, client_state = ds_engine.load_checkpoint(
        str(load_dir or folder), tag=tag, load_module_strict=False, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise RuntimeError(f"{folder}/{tag}: DeepSpeed could not load this checkpoint")
    # mmap: only the key names are needed, not gigabytes of full fine-tune weights (ZeRO-3: rank 0's file)
    saved = read_states(folder, tag)["module"]
    missing = [n for n, p in ds_engine.module.named_parameters() if p.requires_grad and n not in saved]
    if missing:
        raise RuntimeError(
            f"{folder}/{tag} lacks {len(missing)} trainable tensors (first: {missing[0]}): it was written by a "
            "different model config; resume with the config that wrote it"
        )
    return client_state or {}

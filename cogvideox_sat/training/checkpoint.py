"""Training checkpoints in the official SAT layout: atomic, durable, verified, resumable exactly.

Layout (what official tools and released weights use): `<dir>/latest` holds the iteration tag and
`<dir>/<tag>/mp_rank_00_model_states.pt` holds `{"module": state_dict, ...}`. DeepSpeed writes the
tag folder (module, optimizer / ZeRO partitions, LR scheduler) and our `client_state` (iteration,
RNG states, data position). Then, in this order: every file is fsynced and hashed into
`<tag>/manifest.json` (see `manifest`); with an EMA optimizer (`training.ema`) the EMA weights go
to `<tag>-ema/`, sealed the same way; and `latest` moves with an atomic rename whose folder is
fsynced too (`latest` keeps naming `<tag>`, never the EMA). A save killed halfway, or a power
loss, therefore leaves `latest` naming a complete checkpoint; a checkpoint damaged later is
detected by `--resume`, which falls back to the newest intact one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from cogvideox_sat import distributed
from cogvideox_sat.io.run_folder import LATEST, iteration_tags, read_latest
from cogvideox_sat.training.disk_space import DiskFullError, disk_full_message, is_disk_full, warn_if_short
from cogvideox_sat.training.ema import EMA_SUFFIX, WeightEma, ema_tag
from cogvideox_sat.training.manifest import MANIFEST, check_tag, manifest_bytes, seal, write_durably
from cogvideox_sat.training.reshard import UNIVERSAL_DIR, read_states

MODEL_STATES = "mp_rank_00_model_states.pt"


class NonFiniteWeightsError(RuntimeError):
    """Trainable weights hold NaN/Inf: such a checkpoint is never written."""


def write_latest(folder: str | os.PathLike, tag: str) -> None:
    """Point `latest` at `tag` with a rename (atomic on POSIX), then fsync the folder (durable)."""
    write_durably(Path(folder) / LATEST, tag)


def tag_folders(folder: str | os.PathLike) -> list[Path]:
    """Every checkpoint folder of a run, whatever its tag (`20`, `20-ema`, ...), oldest first.

    A checkpoint folder is a sub-folder named by an iteration (optionally with a suffix) or one
    holding a manifest or a DeepSpeed model-states file; `universal/`, `samples/`, ... are not.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.iterdir()
        if p.is_dir() and p.name != UNIVERSAL_DIR and not p.name.startswith(".")
        and (p.name[:1].isdigit() or (p / MANIFEST).is_file() or any(p.glob("*model_states.pt")))
    ]

    def order(p: Path) -> tuple[int, str]:
        digits = p.name[: len(p.name) - len(p.name.lstrip("0123456789"))]
        return (int(digits) if digits else -1, p.name)

    return sorted(found, key=order)


def _sealed(folder: Path, tag: int | str) -> bool:
    return (folder / str(tag) / MANIFEST).is_file()


def prune_old(folder: str | os.PathLike, keep_last: Optional[int]) -> list[int]:
    """Delete all but the newest `keep_last` sealed iteration folders (never the one `latest` names).

    Only sealed checkpoints count and are removed: a folder without manifest (a save that never
    finished) cannot push the newest intact checkpoint out of the window. A run written before
    manifests existed has none sealed; then every iteration folder counts, as before.
    """
    if not keep_last or keep_last < 1:
        return []
    folder = Path(folder)
    latest = read_latest(folder)
    tags = iteration_tags(folder)
    pool = [t for t in tags if _sealed(folder, t)] or tags
    removed = []
    for tag in pool[:-keep_last]:
        if str(tag) != latest:
            shutil.rmtree(folder / str(tag), ignore_errors=True)
            shutil.rmtree(folder / f"{tag}{EMA_SUFFIX}", ignore_errors=True)
            shutil.rmtree(folder / UNIVERSAL_DIR / str(tag), ignore_errors=True)  # its converted copy, if any
            removed.append(tag)
    return removed


def last_checkpoint_bytes(folder: str | os.PathLike) -> Optional[int]:
    """Size of the newest sealed checkpoint (what the next save will need, about)."""
    folder = Path(folder)
    for tag in reversed(iteration_tags(folder)):
        size = manifest_bytes(folder / str(tag))
        if size is not None:
            return size
    return None


def assert_finite_trainable(module: torch.nn.Module) -> None:
    bad = [n for n, p in module.named_parameters() if p.requires_grad and not torch.isfinite(p.detach()).all()]
    if bad:
        raise NonFiniteWeightsError(
            f"{len(bad)} trainable tensors hold NaN/Inf (first: {bad[0]}); refusing to overwrite the last good checkpoint"
        )


def _estimated_bytes(module: torch.nn.Module) -> int:
    """A first checkpoint's size, about: trainable weights plus fp32 master copy and two Adam moments."""
    return sum(p.numel() * (p.element_size() + 12) for p in module.parameters() if p.requires_grad)


def _together(folder: Path, tag: str, needed: int, write: Callable[[], None], after_failure: Callable[[], None] = lambda: None) -> None:
    """Run one phase of a save on every rank; if the disk filled up on any rank, every rank raises
    DiskFullError (one line) after rank 0 removed the partial tag folder. Other errors propagate.

    `after_failure`: the collectives a failed rank skipped inside `write` (so the others do not hang).
    """
    failure = None
    try:
        write()
    except (OSError, RuntimeError) as err:
        if not is_disk_full(err, folder, needed):
            raise
        failure = str(err)
        after_failure()
    if not any(f is not None for f in distributed.gather_objects(failure)):
        return
    if distributed.world_rank() == 0:
        shutil.rmtree(folder / tag, ignore_errors=True)
    distributed.barrier()
    raise DiskFullError(disk_full_message(folder, tag, needed, read_latest(folder)))


def save_checkpoint(
    ds_engine: Any,
    folder: str | os.PathLike,
    iteration: int,
    client_state: dict[str, Any],
    keep_last: Optional[int] = None,
    trainable_only: bool = True,
    ema: Optional[WeightEma] = None,
    durable: bool = True,
) -> Path:
    """Save iteration `iteration` under `folder` (and its EMA weights); every rank must call this.

    Order: DeepSpeed writes `<tag>/`; its files are fsynced and hashed into `<tag>/manifest.json`;
    the EMA weights (if any) are written to `<tag>-ema/` and sealed likewise; `latest` moves
    (rename, folder fsynced); old checkpoints are pruned. `durable=False` skips the fsyncs
    (benchmarks measure their cost with it; training always saves durably).
    """
    assert_finite_trainable(ds_engine.module)
    folder = Path(folder)
    tag = str(iteration)
    main = distributed.world_rank() == 0
    last = last_checkpoint_bytes(folder)
    needed = last or _estimated_bytes(ds_engine.module)
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        warn_if_short(folder, last)
        if (folder / tag).exists() and tag != read_latest(folder):
            shutil.rmtree(folder / tag)  # what an interrupted save of this iteration left
    distributed.barrier()

    def write_tag() -> None:
        ds_engine.save_checkpoint(
            str(folder),
            tag=tag,
            client_state={**client_state, "iteration": iteration},
            save_latest=False,
            exclude_frozen_parameters=trainable_only,
        )

    # a write failing inside DeepSpeed's save skips the barrier its save ends with
    _together(folder, tag, needed, write_tag, after_failure=distributed.barrier)
    _together(folder, tag, needed, lambda: seal(folder / tag, durable))
    if ema is not None:
        etag = ema_tag(tag)

        def write_ema() -> None:
            weights = read_states(folder, tag)["module"] if main else {}
            ema.save(weights, folder / etag / MODEL_STATES, iteration)
            distributed.barrier()

        _together(folder, etag, needed, write_ema)
        _together(folder, etag, needed, lambda: seal(folder / etag, durable))
    _together(folder, tag, needed, lambda: write_latest(folder, tag) if main else None)
    if main:
        prune_old(folder, keep_last)
    distributed.barrier()
    return folder / tag


def choose_resume_tag(folder: str | os.PathLike) -> str:
    """The tag to resume from: `latest`'s if it checks against its manifest, else the newest
    intact one before it (every rank calls this; each hashes a share of the files).

    Each damaged checkpoint is reported with the file and the reason. A run whose checkpoints all
    predate manifests resumes from `latest` unverified, with a warning.
    """
    folder = Path(folder)
    main = distributed.world_rank() == 0

    def say(text: str) -> None:
        if main:
            print(text, flush=True)

    latest, tags = distributed.broadcast_object((read_latest(folder), [str(t) for t in iteration_tags(folder)]) if main else None)
    if not any(_sealed(folder, t) for t in tags + ([latest] if latest else [])):
        if latest is None:
            raise FileNotFoundError(f"{folder}: no `latest` file, nothing to resume from")
        say(f"warning: {folder}: checkpoints without {MANIFEST} (written before verified checkpoints): {latest} is loaded unverified")
        return latest
    if latest is not None and (folder / latest).is_dir():
        older = [t for t in reversed(tags) if not latest.isdigit() or int(t) < int(latest)]
        candidates = [latest, *older]
    else:
        say(f"warning: {folder}: `latest` {'names ' + repr(latest) + ', which does not exist' if latest else 'is missing'}; "
            "looking for the newest intact checkpoint")
        candidates = list(reversed(tags))
    for tag in candidates:
        check = check_tag(folder / tag)
        if check.intact:
            if tag != latest:
                say(f"falling back to checkpoint {folder / tag}, the newest intact one")
                if main:
                    write_latest(folder, tag)  # a crash before the next save comes back here directly
            return tag
        say(f"warning: checkpoint {folder / tag} is damaged: {check.reason()}")
    raise FileNotFoundError(f"{folder}: no intact checkpoint to resume from (checked {', '.join(candidates) or 'none'})")


def resume_checkpoint(
    ds_engine: Any, folder: str | os.PathLike, load_dir: Optional[str | os.PathLike] = None, tag: Optional[str] = None
) -> dict[str, Any]:
    """Load module, optimizer, scheduler and our client state from `folder/<tag>` (default: `latest`).

    `load_dir`: where DeepSpeed reads `<tag>` from when it is not `folder` (the universal copy made
    by `reshard.prepare_resume` for another process count). `tag`: from `choose_resume_tag`.
    """
    tag = tag or read_latest(folder)
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

"""Resuming a run on a different number of processes (e.g. saved on 8 GPUs, resumed on 4).

DeepSpeed's ZeRO checkpoints hold one optimizer partition per process and refuse to load on
another count. A checkpoint written by a different count is therefore converted once, by rank 0,
into DeepSpeed's *universal* layout (every tensor whole: fp32 weight, Adam moments, step),
which any count loads; the converted copy lives in `<run>/universal/<tag>` and the original
stays untouched. Our own state follows along:

- data position: the sampler's shards interleave one epoch permutation (rank r takes positions
  r, r + n, ...), so the samples consumed by n ranks are the first n * offset positions; a new
  count m resumes each rank at n * offset / m (the same global batch keeps this an integer).
- random generators: saved per rank; the same count restores each rank's own stream exactly,
  a different count reseeds per data-parallel rank (no exact stream exists to continue).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from cogvideox_sat import distributed
from cogvideox_sat.io.run_folder import read_latest
from cogvideox_sat.training.rng import restore_rng_state, seed_everything

UNIVERSAL_DIR = "universal"
# the model-states file of a tag: ZeRO-0/1/2 write the first, ZeRO-3 one per rank (rank 0's named)
from cogvideox_sat.io.sat_checkpoint import MODEL_STATES_FILES as STATES_FILES
_DONE = ".complete"


def states_file(folder: str | os.PathLike, tag: str) -> Path:
    """The model-states file of `<folder>/<tag>` (either ZeRO layout)."""
    for name in STATES_FILES:
        path = Path(folder) / tag / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"{Path(folder) / tag}: none of {STATES_FILES}; not a DeepSpeed checkpoint of ours")


def read_states(folder: str | os.PathLike, tag: str) -> dict[str, Any]:
    """The model-states dict (memory-mapped: only small entries are read)."""
    return torch.load(states_file(folder, tag), map_location="cpu", weights_only=False, mmap=True)


def saved_process_count(states: dict[str, Any]) -> int:
    """Processes that wrote the checkpoint (DeepSpeed's data-parallel world: every process here)."""
    return int(states["dp_world_size"])


def _convert(source: Path, target: Path, workers: int = 1) -> None:
    from deepspeed.checkpoint import ds_to_universal

    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    options = argparse.Namespace(
        input_folder=str(source),
        output_folder=str(tmp),
        num_extract_workers=workers,  # 1: serial, no process pools inside a torchrun worker
        num_merge_workers=workers,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,  # plain data parallelism: the version tag is all the info it needs
    )
    ds_to_universal.main(options)
    (tmp.parent / "latest_universal").unlink(missing_ok=True)  # DeepSpeed's pointer to the tmp name
    (tmp / _DONE).touch()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def prepare_resume(folder: str | os.PathLike, tag: Optional[str], ds_config: dict[str, Any]) -> Optional[Path]:
    """Where DeepSpeed must load `<folder>/<tag>` from on this process count; every rank calls this.

    None: the checkpoint itself (same count, or no tag: the caller reports the missing `latest`).
    Another count: the folder holding its universal copy (converted by rank 0 unless already
    there, while the others wait at a barrier: convert large full fine-tunes ahead with
    `python -m cogvideox_sat.training.reshard <run>` so the wait stays short of the process
    group's timeout), and `ds_config["checkpoint"]["load_universal"]` is set; it must reach
    `deepspeed.initialize`.
    """
    if tag is None:
        return None
    folder = Path(folder)
    world = distributed.world_size()
    saved = saved_process_count(read_states(folder, tag))
    if saved == world or not any((folder / tag).glob("*optim_states.pt")):
        return None  # same count, or no ZeRO partitions (stage 0 keeps whole states): loads as is
    target = folder / UNIVERSAL_DIR / tag
    if distributed.is_rank0() and not (target / _DONE).is_file():
        print(f"checkpoint {folder / tag} was written by {saved} processes, resuming on {world}: converting it to "
              f"DeepSpeed's universal layout in {target}", flush=True)
        _convert(folder / tag, target)
    distributed.barrier()
    ds_config.setdefault("checkpoint", {})["load_universal"] = True
    return target.parent


def data_position(client: dict[str, Any], data_parallel_size: int) -> dict[str, int]:
    """The sampler position for this run's data-parallel size from the saved one."""
    position = dict(client["data"])
    saved = int(client.get("data_parallel_size", data_parallel_size))
    if saved != data_parallel_size:
        consumed = int(position["offset"]) * saved
        position["offset"] = consumed // data_parallel_size
        if consumed % data_parallel_size:
            print(f"warning: {consumed} samples of epoch {position['epoch']} were consumed by {saved} data-parallel "
                  f"ranks, which {data_parallel_size} ranks cannot split evenly; up to {data_parallel_size - 1} "
                  "samples are seen again", flush=True)
    return position


def restore_rank_rng(client: dict[str, Any], rank: int, world: int, dp_rank: int, seed: int, iteration: int) -> bool:
    """Restore this rank's random generators; returns False when they had to be reseeded."""
    per_rank = client.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == world:
        restore_rng_state(per_rank[rank])
        return True
    if per_rank is None and world == 1:  # a single-process run of before per-rank states
        restore_rng_state(client["rng"])
        return True
    reseed_rank(seed, dp_rank, iteration)
    return False


def reseed_rank(seed: int, dp_rank: int, iteration: int) -> None:
    """A new stream per data-parallel rank, shared inside a model-parallel group (they must draw alike)."""
    seed_everything(seed + dp_rank + 100003 * iteration)


def gather_rng_states(state: dict[str, Any]) -> Optional[list[dict[str, Any]]]:
    """Every rank's generator states (a collective); the list in rank order, on every rank."""
    return distributed.gather_objects(state)


def main() -> None:
    """Convert a run's latest checkpoint to the universal layout ahead of a resume on another count."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("run", help="the run folder (holds `latest`)")
    parser.add_argument("--tag", help="iteration to convert (default: `latest`)")
    parser.add_argument("--workers", type=int, default=4, help="processes extracting and merging the ZeRO shards")
    args = parser.parse_args()
    run = Path(args.run)
    tag = args.tag or read_latest(run)
    if tag is None:
        raise SystemExit(f"{run} has no `latest` file; pass --tag")
    target = run / UNIVERSAL_DIR / tag
    _convert(run / tag, target, args.workers)
    print(f"{target}: ready; resume with --resume {run} on any process count", flush=True)


if __name__ == "__main__":
    main()

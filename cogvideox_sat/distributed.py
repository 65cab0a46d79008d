"""Process groups of a run: context-parallel (VAE time axis), model- and data-parallel.

The one place that knows about `torch.distributed` groups. Model code never calls it; the
glue (VAE wrapper, training step) asks it for a group and passes that group explicitly.

Context parallelism splits the VAE's time axis over consecutive ranks. The official code keeps
the group in `sgm.util` globals and, in `arguments.py`, reuses SAT's model-parallel group as
the context-parallel group when model_parallel_size <= 2; `use_model_parallel_group_for_cp`
reproduces that. Model/data-parallel accessors delegate to SAT's `sat.mpu` when it has been
initialised, and describe a single process otherwise, so single-GPU and CPU code paths need
no process group at all.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

import torch

import torch.distributed as dist

ProcessGroup = Any  # torch.distributed.ProcessGroup; kept loose so type hints work without dist

_cp_group: ProcessGroup | None = None
_cp_ranks: tuple[int, ...] = ()


# ---------------------------------------------------------------- the world


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_world(backend: str, rank: int, size: int) -> None:
    """Join the run's process group (create it on a free local port when no launcher set one up);
    nothing when this process already belongs to one."""
    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    dist.init_process_group(backend=backend, rank=rank, world_size=size)


def backend() -> str:
    """The process group's backend name (nccl, gloo)."""
    return dist.get_backend()


def initialize_model_parallel(size: int) -> None:
    """SAT's model- and data-parallel groups (its layers read them), once per process."""
    from sat import mpu

    if not mpu.model_parallel_is_initialized():
        mpu.initialize_model_parallel(size)


# ---------------------------------------------------------------- context parallel


def initialize_context_parallel(size: int) -> ProcessGroup | None:
    """Split the world into groups of `size` consecutive ranks; this rank joins its group.

    Every rank must call this (group creation is collective). Returns the group, or None
    for size 1 (a one-rank group needs no communication).
    """
    if size < 1:
        raise ValueError(f"context-parallel size must be >= 1, got {size}")
    if size == 1:
        set_context_parallel_group(None)
        return None
    if not dist.is_initialized():
        raise ValueError(
            f"context-parallel size {size} needs torch.distributed; call "
            "torch.distributed.init_process_group first (or use cp_size 1)"
        )
    world, rank = dist.get_world_size(), dist.get_rank()
    if world % size:
        raise ValueError(f"world size {world} is not a multiple of context-parallel size {size}")
    mine = None
    for start in range(0, world, size):
        ranks = tuple(range(start, start + size))
        group = dist.new_group(list(ranks))  # collective: every rank creates every group
        if rank in ranks:
            mine = (group, ranks)
    assert mine is not None
    set_context_parallel_group(*mine)
    return mine[0]


def set_context_parallel_group(group: ProcessGroup | None, ranks: tuple[int, ...] | None = None) -> None:
    """Adopt an existing group (or None: no context parallelism) as the context-parallel group."""
    global _cp_group, _cp_ranks
    if group is None:
        _cp_group, _cp_ranks = None, ()
        return
    if ranks is None:
        ranks = tuple(dist.get_process_group_ranks(group))
    _cp_group, _cp_ranks = group, tuple(ranks)


def use_model_parallel_group_for_cp() -> ProcessGroup | None:
    """The official choice: the model-parallel group doubles as context-parallel group (mp <= 2)."""
    if get_model_parallel_world_size() <= 1:
        set_context_parallel_group(None)
        return None
    group = get_model_parallel_group()
    set_context_parallel_group(group)
    return group


def destroy_context_parallel() -> None:
    """Forget the context-parallel group (tests; the group itself dies with the process group)."""
    set_context_parallel_group(None)


def is_context_parallel_initialized() -> bool:
    return _cp_group is not None


def get_context_parallel_group() -> ProcessGroup | None:
    """The context-parallel group, or None when there is no context parallelism."""
    return _cp_group


def get_context_parallel_world_size() -> int:
    return len(_cp_ranks) if _cp_group is not None else 1


def get_context_parallel_rank() -> int:
    """This process's index inside its context-parallel group (0 without one)."""
    if _cp_group is None:
        return 0
    return dist.get_rank(group=_cp_group)


def group_size(group: ProcessGroup | None) -> int:
    """World size of `group`, 1 for None (no group = this process alone)."""
    return 1 if group is None else dist.get_world_size(group=group)


def group_rank(group: ProcessGroup | None) -> int:
    """Rank inside `group`, 0 for None."""
    return 0 if group is None else dist.get_rank(group=group)


# ---------------------------------------------------------------- model / data parallel (SAT)


def _sat_mpu() -> Any | None:
    """SAT's mpu module if it is imported and initialised; never imports SAT (3 s import)."""
    mpu = sys.modules.get("sat.mpu")
    if mpu is None or not mpu.model_parallel_is_initialized():
        return None
    return mpu


def get_model_parallel_group() -> ProcessGroup | None:
    mpu = _sat_mpu()
    return None if mpu is None else mpu.get_model_parallel_group()


def get_model_parallel_world_size() -> int:
    mpu = _sat_mpu()
    return 1 if mpu is None else mpu.get_model_parallel_world_size()


def get_model_parallel_rank() -> int:
    mpu = _sat_mpu()
    return 0 if mpu is None else mpu.get_model_parallel_rank()


def get_data_parallel_group() -> ProcessGroup | None:
    mpu = _sat_mpu()
    return None if mpu is None else mpu.get_data_parallel_group()


def get_data_parallel_world_size() -> int:
    mpu = _sat_mpu()
    if mpu is not None:
        return mpu.get_data_parallel_world_size()
    return dist.get_world_size() if dist.is_initialized() else 1


def get_data_parallel_rank() -> int:
    mpu = _sat_mpu()
    if mpu is not None:
        return mpu.get_data_parallel_rank()
    return dist.get_rank() if dist.is_initialized() else 0


# ---------------------------------------------------------------- small collectives of the whole world


def world_size() -> int:
    """Processes of the run (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def world_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_multiprocess() -> bool:
    """More than one process in the run (collectives then need every rank)."""
    return world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_initialized():
        dist.barrier()


def all_true(value: bool, device: Any) -> bool:
    """True on every rank only if `value` is True on every rank: one scalar all-reduce (MIN)."""
    if not is_multiprocess():
        return bool(value)
    flag = torch.tensor([1.0 if value else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def mean_over_ranks(value: float, device: Any) -> float:
    """The ranks' mean of a scalar metric (one float64 all-reduce)."""
    if not is_multiprocess():
        return value
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def sum_over_group_(tensor: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """In place: the sum of `tensor` over the ranks of `group` (ZeRO pieces assembled by sum)."""
    dist.all_reduce(tensor, group=group)
    return tensor


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank (a collective; `value` itself without a process group)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank (a collective)."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def max_over_ranks(value: int, device: Any) -> int:
    """The largest of the ranks' integers: one scalar all-reduce (`device`: where the backend needs it)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather_to_first(value: Any) -> list[Any] | None:
    """Every rank's `value`, in rank order, on global rank 0 only (None elsewhere): a collective
    that leaves the other ranks' memory alone (validation videos gathered for logging)."""
    if world_size() == 1:
        return [value]
    values: list[Any] | None = [None] * world_size() if world_rank() == 0 else None
    dist.gather_object(value, values, dst=0)
    return values


def broadcast_from_model_parallel_source(tensors: Sequence[torch.Tensor]) -> None:
    """In place: give every rank of this model-parallel group the group's first rank's values.

    No-op without model parallelism. Called at step boundaries (noise, timestep indices,
    initial sampling noise), never inside the diffusion math.
    """
    if get_model_parallel_world_size() <= 1:
        return
    group = get_model_parallel_group()
    src = dist.get_process_group_ranks(group)[0]
    for tensor in tensors:
        dist.broadcast(tensor, src=src, group=group)


def is_rank0() -> bool:
    """The process that prints and writes run-level files (True without a process group)."""
    return world_rank() == 0

"""Process-group and device setup for a training or sampling run (torchrun or a single process)."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cogvideox_sat import distributed


@dataclass(frozen=True)
class RunPlacement:
    device: torch.device
    rank: int
    world_size: int
    dp_rank: int
    dp_world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(args: argparse.Namespace) -> RunPlacement:
    """Join (or create) the process group, SAT's model-parallel groups and the VAE's CP group.

    GPU runs use NCCL on LOCAL_RANK's device; without a GPU everything runs on gloo/CPU, so the
    same code path serves the CPU demo and the tests.
    """
    use_cuda = torch.cuda.is_available() and args.device != "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", args.local_rank or 0))
    if use_cuda:
        index = local_rank if args.device in (-1, None) else int(args.device)
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    else:
        device = torch.device("cpu")
    # a plain `python train_video.py` is a one-process torchrun as far as DeepSpeed is concerned
    for key, value in (("RANK", args.rank), ("WORLD_SIZE", args.world_size), ("LOCAL_RANK", local_rank)):
        os.environ.setdefault(key, str(value))
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, rank=args.rank, world_size=args.world_size)

    from sat import mpu  # SAT's model-parallel groups (BaseModel's layers read them)

    if not mpu.model_parallel_is_initialized():
        mpu.initialize_model_parallel(args.model_parallel_size)
    # official choice: the model-parallel group doubles as the VAE's context-parallel group
    distributed.use_model_parallel_group_for_cp()

    import deepspeed

    deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)
    args.device = device
    return RunPlacement(
        device=device,
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        dp_rank=distributed.get_data_parallel_rank(),
        dp_world_size=distributed.get_data_parallel_world_size(),
    )

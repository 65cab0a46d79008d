"""Process-group and device setup for a training or sampling run (torchrun or a single process)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch

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
    distributed.join_world("nccl" if use_cuda else "gloo", args.rank, args.world_size)
    distributed.initialize_model_parallel(args.model_parallel_size)
    # official choice: the model-parallel group doubles as the VAE's context-parallel group
    distributed.use_model_parallel_group_for_cp()

    import deepspeed

    deepspeed.init_distributed(dist_backend=distributed.backend(), auto_mpi_discovery=False)
    args.device = device
    return RunPlacement(
        device=device,
        rank=distributed.world_rank(),
        world_size=distributed.world_size(),
        dp_rank=distributed.get_data_parallel_rank(),
        dp_world_size=distributed.get_data_parallel_world_size(),
    )

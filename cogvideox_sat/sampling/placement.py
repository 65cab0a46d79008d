"""Which device and which share of the prompts this process gets.

A plain `python sample_video.py` needs no process group: it samples on one device. Under
torchrun (WORLD_SIZE > 1) the process group and SAT's model-parallel groups are created as for
training, and prompts are split across data-parallel ranks; ranks of one model-parallel group
sample the same prompts and only its first rank writes files. With `args.sequence_parallel` the
ranks of a group run the DiT together (Ulysses), each on its slice of the tokens.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch

from cogvideox_sat import distributed


@dataclass(frozen=True)
class SamplingPlacement:
    device: torch.device
    rank: int = 0
    dp_rank: int = 0
    dp_world_size: int = 1
    writes: bool = True  # first rank of its model-parallel group: decodes and saves
    model_parallel_group: Any = None  # the ranks sampling the same prompts with this one; None: alone

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return distributed.is_multiprocess()


class BroadcastChannel:
    """Lines read on global rank 0 handed to every rank (stdin prompts under torchrun)."""

    def __init__(self) -> None:
        self.is_source = distributed.is_rank0()

    def share(self, line: Optional[str]) -> Optional[str]:
        return distributed.broadcast_object(line)


def local_device(device: int | str | torch.device | None) -> torch.device:
    """args.device -> torch.device: -1/None = LOCAL_RANK's GPU (CPU without one), an int = that GPU."""
    if isinstance(device, torch.device):
        return device
    if device in (-1, None, "-1"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    if isinstance(device, int) or str(device).isdigit():
        return torch.device("cuda", int(device))
    return torch.device(str(device))


def place(args: argparse.Namespace) -> SamplingPlacement:
    """Set up this process (process groups only under torchrun) and say what it samples."""
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1 or distributed.is_multiprocess()
    if not multi:
        device = local_device(args.device)
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)
        args.device = device
        return SamplingPlacement(device)
    from cogvideox_sat.training.setup import init_distributed

    run = init_distributed(args)
    return SamplingPlacement(
        device=run.device,
        rank=run.rank,
        dp_rank=run.dp_rank,
        dp_world_size=run.dp_world_size,
        writes=distributed.get_model_parallel_rank() == 0,
        model_parallel_group=distributed.get_model_parallel_group() if distributed.get_model_parallel_world_size() > 1 else None,
    )


def enable_sequence_parallel(engine: Any, placement: SamplingPlacement) -> None:
    """Ulysses sequence parallelism of the DiT over the model-parallel group (`args.sequence_parallel`).

    Ulysses needs identical inputs on the group's ranks at every step. They hold the same prompts
    and per-sample seeds (one data-parallel rank), `engine.sample` broadcasts the initial noise, the
    sampler's later draws come from identically seeded generators, and the DiT gives every rank the
    whole output, so the latents stay equal across the group from step to step.
    """
    if placement.model_parallel_group is None:
        raise ValueError(
            "args.sequence_parallel needs a model-parallel group of >= 2 ranks: launch with torchrun "
            "and set args.model_parallel_size to the degree (e.g. 2 or 4)"
        )
    engine.diffusion_model.set_sequence_parallel(placement.model_parallel_group)

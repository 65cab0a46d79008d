"""Helpers of the multi-process (gloo, CPU) parallelism tests: process groups and result files."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], out_dir: str, args: tuple) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
        # leave together: a rank that tears gloo down while a peer still talks to it can make that
        # peer abort at exit ("terminate called without an active exception", seen once in CI)
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def run_ranks(fn: Callable[..., Any], world: int, out_dir: Path, *args: Any) -> list[Any]:
    """Run `fn(rank, world, *args)` in `world` gloo processes; return each rank's return value.

    `fn` must be a module-level function (it is pickled into spawned processes).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    mp.spawn(_entry, args=(world, free_port(), fn, str(out_dir), args), nprocs=world, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world)]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = 1e-5, scale: float = 0.0) -> None:
    """max |a - e| <= rtol * max(max |e|, scale): fp32 reordering noise, not a loose tolerance.

    `scale` is for tensors that are zero up to rounding (e.g. a key-norm bias, which softmax
    cannot see): pass the magnitude of their neighbours, such as the largest gradient of the model.
    """
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    ref = max(expected.abs().max().item(), scale, 1e-12)
    err = (actual - expected).abs().max().item() / ref
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol}"

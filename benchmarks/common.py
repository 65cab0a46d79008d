"""Helpers the benchmark scripts share: whole wall-clock timings and cross-rank maxima.

Benchmarks import this as `common` (the scripts run from benchmarks/, which is on sys.path);
the library never imports benchmarks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued work (a no-op on the CPU), so wall-clock timings are whole."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_over_ranks(value: float, device: torch.device) -> float:
    """The largest `value` of all ranks (slowest step, fullest GPU)."""
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())

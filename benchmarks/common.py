"""Helpers the benchmark scripts share: whole wall-clock timings, peak GPU memory, cross-rank
maxima and the table rule.

Benchmarks import this as `common` (the scripts run from benchmarks/, which is on sys.path;
tests/benchmarks/__init__.py puts it there for the smoke tests); the library never imports
benchmarks.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
import torch.distributed as dist


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued work (a no-op on the CPU), so wall-clock timings are whole."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window on a GPU (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device, missing: float | None = float("nan")) -> float | None:
    """Most GPU memory allocated since the last reset, in GiB (`missing` on the CPU)."""
    if device.type != "cuda":
        return missing
    return torch.cuda.max_memory_allocated(device) / 2**30


def mean_std(times: Sequence[float]) -> tuple[float, float]:
    """Mean and population spread of repeated timings (spread 0 for a single one)."""
    return statistics.mean(times), statistics.pstdev(times) if len(times) > 1 else 0.0


def print_header(header: str) -> None:
    """A table's column line and the rule under it."""
    print(header)
    print("-" * len(header))


def max_over_ranks(value: float, device: torch.device) -> float:
    """The largest `value` of all ranks (slowest step, fullest GPU)."""
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())

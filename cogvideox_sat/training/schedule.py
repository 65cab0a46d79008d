"""Learning-rate schedule: linear warmup, then decay that never goes below zero.

SAT's AnnealingLR lets linear decay overshoot to a negative LR on the last step and silently adds a
100-iteration 5% warmup when fine-tuning resumes; this schedule is a pure function of the
iteration, so resuming at iteration i gives exactly the LR an uninterrupted run has there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

DecayStyle = Literal["constant", "linear", "cosine", "exponential"]


@dataclass(frozen=True)
class LRSchedule:
    """LR multiplier per iteration (the optimizer's base LR times this)."""

    total_iters: int
    warmup_fraction: float = 0.01
    style: DecayStyle = "linear"
    min_ratio: float = 0.1  # cosine/exponential end at this fraction of the base LR

    @property
    def warmup_iters(self) -> int:
        return int(self.warmup_fraction * self.total_iters)

    def __call__(self, iteration: int) -> float:
        warmup = self.warmup_iters
        if warmup > 0 and iteration < warmup:
            return (iteration + 1) / warmup
        if self.style == "constant":
            return 1.0
        span = max(self.total_iters - warmup, 1)
        progress = min(max((iteration - warmup) / span, 0.0), 1.0)
        if self.style == "linear":
            return 1.0 - progress
        if self.style == "cosine":
            return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio**progress


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

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


class ConfiguredLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR whose schedule and base LRs stay the config's when a checkpoint is loaded.

    torch's LambdaLR restores the saved schedule object's fields and base LRs over the ones it was
    built with, so a run resumed with a longer `train_iters` would silently keep the old schedule
    (and its LR of 0 after the old end). Here the iteration count comes from the checkpoint, the
    schedule from the config; `changes` lists what differed from the checkpoint, for the caller to
    report. With an unchanged config the LR is the same as the uninterrupted run's.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> None:
        self.changes: list[str] = []
        super().__init__(optimizer, schedule)

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        saved_schedules = state.pop("lr_lambdas", None) or []
        saved_base = state.pop("base_lrs", None)
        base = list(self.base_lrs)
        super().load_state_dict({**state, "base_lrs": base, "lr_lambdas": [None] * len(self.lr_lambdas)})
        changes: list[str] = []  # every group shares one schedule: each difference once
        for schedule, saved in zip(self.lr_lambdas, saved_schedules):
            for name, value in (saved or {}).items():
                line = f"{name} {value} -> {getattr(schedule, name, value)}"
                if getattr(schedule, name, value) != value and line not in changes:
                    changes.append(line)
        if saved_base is not None and list(saved_base) != base:
            changes.append(f"base LR {saved_base} -> {base}")
        self.changes = changes
        if changes:  # the next step's LR from the config's schedule, not the checkpoint's
            self._last_lr = [lr * schedule(self.last_epoch) for lr, schedule in zip(self.base_lrs, self.lr_lambdas)]
            for group, lr in zip(self.optimizer.param_groups, self._last_lr):
                group["lr"] = lr


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> ConfiguredLR:
    return ConfiguredLR(optimizer, schedule)

"""First-block step cache for sampling (TeaCache / first-block-cache style), opt-in.

Between neighbouring sampler steps most transformer blocks change their input little. At each
step the first block runs; when its residual (output - input) differs from the one of the last
fully computed step by less than `threshold` (mean absolute difference relative to that
residual's mean absolute value), the remaining blocks are skipped and the residual they added
at that step is added instead. Otherwise all blocks run and both residuals are remembered.
The reference moves only on computed steps, so drift over skipped steps accumulates until a
step is computed again. `threshold` 0 never skips (identical to no cache).

What a threshold skips depends on the weights: `changes` keeps every step's relative change, so
a sampling run shows the range to pick from (`summary()`). Measured on an H100 with random 2B
weights, 50 steps: every change was between 0.3 and 1.0 (0.3 skipped none, 1.0 skipped 43). On
the trained demo model (25 steps) they ran from 0.15 to 0.76; `benchmarks/step_cache_quality.py`
prints, per threshold, the steps skipped and the video's PSNR against the uncached one.

One `StepCache` lives for one sampling call (the sampler creates it and passes it to the
network as the `step_cache` model input, the CFG batch included); `steps` / `skipped` count.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Blocks = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepCache:
    threshold: float
    first_residual: torch.Tensor | None = None
    rest_residual: torch.Tensor | None = None
    steps: int = 0
    skipped: int = 0
    changes: list[float] = field(default_factory=list)  # each step's `change` after the first

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) or self.threshold < 0:
            raise ValueError(f"sampler_config.params.step_cache_threshold must be a number >= 0, got {self.threshold!r}")

    def change(self, first_residual: torch.Tensor) -> float | None:
        """Relative change of the first block's residual since the last computed step (None
        when there is nothing to compare with)."""
        ref = self.first_residual
        if ref is None or self.rest_residual is None or ref.shape != first_residual.shape:
            return None
        return ((first_residual.float() - ref.float()).abs().mean() / ref.float().abs().mean().clamp_min(1e-12)).item()

    def run(self, hidden: torch.Tensor, first_block: Blocks, rest_blocks: Blocks) -> torch.Tensor:
        """All blocks applied to `hidden`, or the first block plus the remembered residual."""
        if torch.is_grad_enabled():
            raise RuntimeError("the sampling step cache runs without gradients (sampling only)")
        self.steps += 1
        after_first = first_block(hidden)
        first_residual = after_first - hidden
        change = self.change(first_residual)
        if change is not None:
            self.changes.append(change)
        if change is not None and change < self.threshold:
            self.skipped += 1
            return after_first + self.rest_residual
        out = rest_blocks(after_first)
        self.first_residual, self.rest_residual = first_residual, out - after_first
        return out

    def summary(self) -> str:
        """'skipped K/N steps at T, change per step min/median/max a/b/c': what to set T from."""
        text = f"skipped {self.skipped}/{self.steps} steps at {self.threshold:g}"
        if self.changes:
            low, mid, high = min(self.changes), statistics.median(self.changes), max(self.changes)
            text += f", change per step min/median/max {low:.3g}/{mid:.3g}/{high:.3g}"
        return text

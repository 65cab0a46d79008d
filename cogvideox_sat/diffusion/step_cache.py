"""First-block step cache for sampling (TeaCache / first-block-cache style), opt-in.

Between neighbouring sampler steps most transformer blocks change their input little. At each
step the first block runs; when its residual (output - input) differs from the one of the last
fully computed step by less than `threshold` (mean absolute difference relative to that
residual's mean absolute value), the remaining blocks are skipped and the residual they added
at that step is added instead. Otherwise all blocks run and both residuals are remembered.
The reference moves only on computed steps, so drift over skipped steps accumulates until a
step is computed again. `threshold` 0 never skips (identical to no cache); ~0.05-0.1 skips a
third to a half of the steps of a 50-step video.

One `StepCache` lives for one sampling call (the sampler creates it and passes it to the
network as the `step_cache` model input, the CFG batch included); `steps` / `skipped` count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Blocks = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepCache:
    threshold: float
    first_residual: torch.Tensor | None = None
    rest_residual: torch.Tensor | None = None
    steps: int = 0
    skipped: int = 0

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
        if change is not None and change < self.threshold:
            self.skipped += 1
            return after_first + self.rest_residual
        out = rest_blocks(after_first)
        self.first_residual, self.rest_residual = first_residual, out - after_first
        return out

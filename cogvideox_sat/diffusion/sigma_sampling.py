"""Training noise-level sampling: a DDPM timestep index per sample."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from cogvideox_sat.registry import instantiate_from_config

# The official code switches uniform per-group sampling off for small data-parallel worlds.
_UNIFORM_MIN_WORLD_SIZE = 9


class DiscreteSampling:
    """Draws timestep indices uniformly in [0, num_idx) and returns their sqrt(alpha_cumprod).

    With `uniform_sampling` and a data-parallel world of more than 8 ranks, ranks are split
    into `group_num` groups and group g draws only from the g-th of `group_num` equal index
    intervals, so every step covers the whole schedule evenly across the world (official
    behaviour). The data-parallel rank and world size are not looked up here: the engine
    passes them in with `set_data_parallel(rank, world_size)` (default: one rank).
    """

    def __init__(
        self,
        discretization_config: Mapping[str, Any],
        num_idx: int,
        do_append_zero: bool = False,
        flip: bool = True,
        uniform_sampling: bool = False,
        group_num: int = 0,
    ) -> None:
        self.num_idx = num_idx
        # Flipped: entry i is DDPM timestep i. A plain float32 tensor (see DiscreteDenoiser).
        self.sigmas = instantiate_from_config(discretization_config)(
            num_idx, do_append_zero=do_append_zero, flip=flip
        )
        self.uniform_sampling_requested = bool(uniform_sampling)
        self.group_num = int(group_num)
        self.set_data_parallel(rank=0, world_size=1)

    def set_data_parallel(self, rank: int, world_size: int) -> None:
        """Tell the sampler this rank's data-parallel position (decides uniform sampling)."""
        self.rank = rank
        self.world_size = world_size
        self.uniform_sampling = (
            self.uniform_sampling_requested and world_size >= _UNIFORM_MIN_WORLD_SIZE
        )
        if not self.uniform_sampling:
            return
        if self.group_num <= 0 or world_size % self.group_num != 0:
            raise ValueError(
                f"DiscreteSampling: uniform_sampling with a data-parallel world of {world_size} "
                f"ranks needs group_num > 0 dividing {world_size} (got group_num={self.group_num}); "
                "set loss_fn_config.params.sigma_sampler_config.params.group_num accordingly "
                "or uniform_sampling: false"
            )
        self.group_width = world_size // self.group_num  # ranks per group
        self.sigma_interval = self.num_idx // self.group_num  # indices per group

    def index_range(self) -> tuple[int, int]:
        """The half-open interval of timestep indices this rank draws from."""
        if not self.uniform_sampling:
            return 0, self.num_idx
        group_index = self.rank // self.group_width
        return group_index * self.sigma_interval, (group_index + 1) * self.sigma_interval

    def idx_to_sigma(self, idx: torch.Tensor) -> torch.Tensor:
        return self.sigmas[idx]

    def __call__(
        self, n_samples: int, rand: torch.Tensor | None = None, return_idx: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_cumprod) for `n_samples` drawn indices (and the indices). `rand`
        overrides the draw with given indices."""
        if rand is None:
            low, high = self.index_range()
            idx = torch.randint(low, high, (n_samples,))
        else:
            idx = rand
        sigma = self.idx_to_sigma(idx)
        return (sigma, idx) if return_idx else sigma

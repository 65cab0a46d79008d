"""DiscreteSampling: index range, the official uniform per-group split, and its guards."""

from __future__ import annotations

import pytest
import torch

from _diffusion_configs import discretization
from cogvideox_sat.diffusion.sigma_sampling import DiscreteSampling


def make(uniform: bool = True, group_num: int = 4) -> DiscreteSampling:
    return DiscreteSampling(
        discretization_config=discretization(1.0), num_idx=1000, uniform_sampling=uniform, group_num=group_num
    )


def test_single_rank_draws_from_the_whole_schedule():
    sampler = make()
    alpha, idx = sampler(4000, return_idx=True)
    assert not sampler.uniform_sampling  # one rank: official switches it off
    assert idx.min() >= 0 and idx.max() <= 999 and idx.unique().numel() > 900
    torch.testing.assert_close(alpha, sampler.sigmas[idx])


def test_rand_overrides_the_draw():
    sampler = make()
    idx = torch.tensor([0, 999, 500])
    alpha = sampler(3, rand=idx)
    torch.testing.assert_close(alpha, sampler.sigmas[idx])
    assert alpha[1].item() == 0.0  # zero SNR at the last timestep


@pytest.mark.parametrize("world,group_num", [(16, 4), (16, 8), (40, 40)])
def test_uniform_sampling_splits_indices_by_rank_group(world, group_num):
    sampler = make(group_num=group_num)
    width, interval = world // group_num, 1000 // group_num
    covered = set()
    for rank in range(world):
        sampler.set_data_parallel(rank, world)
        assert sampler.uniform_sampling
        _, idx = sampler(500, return_idx=True)
        group = rank // width
        assert idx.min() >= group * interval and idx.max() < (group + 1) * interval
        covered.update(idx.tolist())
    # Together the groups cover the whole schedule.
    assert min(covered) < interval and max(covered) >= 1000 - interval


def test_uniform_sampling_off_for_eight_ranks_or_fewer():
    sampler = make(group_num=4)
    sampler.set_data_parallel(7, 8)
    assert not sampler.uniform_sampling
    assert sampler.index_range() == (0, 1000)


def test_uniform_sampling_needs_a_group_num_dividing_the_world():
    sampler = make(group_num=0)  # the 2B/5B configs leave group_num unset
    with pytest.raises(ValueError, match="group_num"):
        sampler.set_data_parallel(0, 16)
    sampler = make(group_num=5)
    with pytest.raises(ValueError, match="dividing 16"):
        sampler.set_data_parallel(0, 16)
    sampler = make(uniform=False, group_num=0)
    sampler.set_data_parallel(0, 16)
    assert sampler.index_range() == (0, 1000)

"""The step-boundary broadcast really makes a model-parallel group share one noise draw
(two CPU processes over gloo; the group stands in for SAT's model-parallel group)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from cogvideox_sat import distributed
    from cogvideox_sat.diffusion.loss import VideoDiffusionLoss
    from cogvideox_sat.distributed import broadcast_from_model_parallel_source
    from cogvideox_sat.engine import broadcast_noise_draw

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        distributed.get_model_parallel_world_size = lambda: world
        distributed.get_model_parallel_group = lambda: dist.group.WORLD
        loss = VideoDiffusionLoss(
            sigma_sampler_config={
                "target": "cogvideox_sat.diffusion.sigma_sampling.DiscreteSampling",
                "params": {
                    "num_idx": 1000,
                    "discretization_config": {"target": "cogvideox_sat.diffusion.discretizer.ZeroSNRDDPMDiscretization"},
                },
            },
            offset_noise_level=0.1,
        )
        torch.manual_seed(100 + rank)  # different streams per rank, as on real model-parallel ranks
        draw = broadcast_noise_draw(loss.draw(torch.zeros(3, 2, 4, 2, 2)))
        noise = torch.randn(2, 5)
        broadcast_from_model_parallel_source([noise])
        torch.save({"draw": draw.tensors(), "noise": noise}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_noise_draw_is_broadcast_from_the_first_rank(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    for a, b in zip(r0["draw"], r1["draw"]):
        assert torch.equal(a, b)
    assert torch.equal(r0["noise"], r1["noise"])
    # ...and the values are rank 0's own draw.
    torch.manual_seed(100)
    idx = torch.randint(0, 1000, (3,))
    assert torch.equal(r0["draw"][0], idx)

"""ZeRO data parallelism through DeepSpeed on CPU: 2 gloo ranks x micro-batch 1 take exactly the
steps of 1 rank x micro-batch 2 (same global batch, same samples), with ZeRO-2 and ZeRO-3.

The tiny demo engine (DiT + T5, LoRA or full fine-tune) is built and wrapped by DeepSpeed as
`train(args)` does (param groups, optimizer config, ZeRO-3's hidden frozen modules); samples are
picked by the training sampler (`ResumableShardSampler`, sharded over data-parallel ranks). Only
the random draw is pinned: each sample's timestep and noise come from a seed derived from the
sample's own bytes, so a sample gets the same draw whichever rank and batch it lands in. Compared:
the first loss, the full averaged gradient of every trainable tensor (before clipping), Adam's
second moments after the step (they see the gradient's scale, which Adam's first update hides),
the fp32 weights after the step, and the loss of a second step.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _parallel_testkit import assert_close, run_ranks
from _zero_testkit import build_engine, ds_config, initialize, optimizer_view, samples, step, trainable

pytestmark = pytest.mark.slow  # ~30 s on 2 cores: two DeepSpeed worlds (1 and 2 processes), 3 cases each

GLOBAL_BATCH = 2
STEPS = 2
N_SAMPLES = 2 * GLOBAL_BATCH * STEPS  # an epoch longer than the steps: no wrap-around
# Adam's first update is g / (|g| + eps): for gradients near eps it magnifies fp32 noise, so the
# weights after the step get a looser bound than the gradients and moments they come from.
RTOL = {"grads": 1e-5, "exp_avg_sq": 2e-5, "weights": 1e-3}
CASES = {
    "zero2_lora": (2, "tiny_t2v_lora"),
    "zero3_full": (3, "tiny_t2v"),
    "zero3_lora": (3, "tiny_t2v_lora"),
}


def _worker(rank: int, world: int, t5_dir: str) -> dict[str, Any]:
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    from cogvideox_sat.training.data import ResumableShardSampler
    from cogvideox_sat.training.main import optimizer_config

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    micro = GLOBAL_BATCH // world
    data = samples(N_SAMPLES)
    results = {}
    for case, (stage, model) in CASES.items():
        ds_engine = initialize(build_engine(model, stage, t5_dir), optimizer_config(ds_config(stage, micro), torch.device("cpu")))
        order = iter(ResumableShardSampler(len(data), rank, world, seed=7))
        out: dict[str, Any] = {"losses": []}
        for i in range(STEPS):
            loss, _ = step(ds_engine, [data[next(order)] for _ in range(micro)])
            out["losses"].append(loss)
            if i == 0:
                out["grads"] = {n: safe_get_full_grad(p).clone() for n, p in trainable(ds_engine)}
            ds_engine.step()
            if i == 0:
                view = optimizer_view(ds_engine)
                out["weights"], out["exp_avg_sq"] = view["weights"], view["exp_avg_sq"]
        out["n_trainable"] = len(trainable(ds_engine))
        results[case] = out
        ds_engine.destroy()
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    tmp = tmp_path_factory.mktemp("zero_dp")
    t5_dir = str(make_tiny_t5(tmp / "t5", d_model=32))
    return {world: run_ranks(_worker, world, tmp / f"world{world}", t5_dir) for world in (1, 2)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_step_like_one_rank_with_the_whole_batch(runs: dict[int, list[dict[str, Any]]], case: str) -> None:
    (single,) = [r[case] for r in runs[1]]
    pair = [r[case] for r in runs[2]]
    assert single["n_trainable"] > 0
    # the two ranks saw different samples, whose mean is the one-rank loss
    assert pair[0]["losses"][0] != pair[1]["losses"][0]
    for step in range(STEPS):
        mean = sum(r["losses"][step] for r in pair) / 2
        assert mean == pytest.approx(single["losses"][step], rel=1e-6, abs=0), f"step {step + 1} loss"
    for key in ("grads", "exp_avg_sq", "weights"):
        assert pair[0][key].keys() == single[key].keys()
        largest = max(t.abs().max().item() for t in single[key].values())
        for name, expected in single[key].items():
            for rank, r in enumerate(pair):
                assert_close(r[key][name], expected, f"{case} {key} {name} rank {rank}", rtol=RTOL[key], scale=1e-2 * largest)

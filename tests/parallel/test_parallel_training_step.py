"""The DeepSpeed training step on 2 gloo ranks equals the step on 1 rank, number for number:

- ZeRO data parallelism: 2 ranks x micro-batch 1 == 1 rank x micro-batch 2 (same global batch,
  same samples), ZeRO-2 (LoRA) and ZeRO-3 (full fine-tune);
- Ulysses sequence parallelism: 2 ranks forming one model-parallel group, each running the DiT
  layers on half the tokens with one of the two heads == 1 rank, micro-batch 1, same stages.

The tiny demo engine (DiT + T5) is built and wrapped as `train(args)` does (param groups, optimizer
config, ZeRO-3's hidden frozen modules, SAT's model-parallel groups and `enable_sequence_parallel`
for the second part); samples are picked by the training sampler (`ResumableShardSampler` over the
data-parallel ranks). Only the random draw is pinned to each sample (see _zero_testkit), so a sample
gets the same timestep and noise whichever rank and batch it lands in. Compared per step: the loss;
after the first backward, the full reduced gradient of every trainable tensor (before clipping); after
the first step, the Adam moments (they see the gradient's scale, which Adam's first update hides) and
the fp32 weights; then the second step's loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _parallel_testkit import assert_close, run_ranks
from _zero_testkit import build_engine, ds_config, initialize, optimizer_view, samples, step, trainable

pytestmark = pytest.mark.slow  # ~45 s on 2 cores: DeepSpeed worlds of 1 and 2 processes, 4 cases each

STEPS = 2
CASES = {"zero2_lora": (2, "tiny_t2v_lora"), "zero3_full": (3, "tiny_t2v")}
# Adam's first update is g / (|g| + eps): for gradients near eps it magnifies fp32 noise, so the
# weights after the step get a looser bound than the gradients and moments they come from.
RTOL = {"grads": 1e-5, "exp_avg": 1e-5, "exp_avg_sq": 2e-5, "weights": 1e-3}


def _train(case: str, micro: int, rank: int, world: int, t5_dir: str, sequence_parallel: bool) -> dict[str, Any]:
    from deepspeed.utils import safe_get_full_grad

    from cogvideox_sat.training.data import ResumableShardSampler
    from cogvideox_sat.training.main import enable_sequence_parallel, optimizer_config

    stage, model = CASES[case]
    engine = build_engine(model, stage, t5_dir)
    seen: list[int] = []
    engine.diffusion_model.transformer.layers[0].attention.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    if sequence_parallel:
        enable_sequence_parallel(engine)
    ds_engine = initialize(engine, optimizer_config(ds_config(stage, micro), torch.device("cpu")))
    data = samples(2 * STEPS * 2)
    order = iter(ResumableShardSampler(len(data), rank, world, seed=7))
    out: dict[str, Any] = {"losses": []}
    for i in range(STEPS):
        loss, _ = step(ds_engine, [data[next(order)] for _ in range(micro)])
        out["losses"].append(loss)
        if i == 0:
            out["grads"] = {n: safe_get_full_grad(p).clone() for n, p in trainable(ds_engine)}
        ds_engine.step()
        if i == 0:
            out.update(optimizer_view(ds_engine))
    out["tokens_seen"] = seen[0]
    ds_engine.destroy()
    return out


def _worker(rank: int, world: int, t5_dir: str) -> dict[str, Any]:
    import deepspeed
    from sat import mpu

    from cogvideox_sat import distributed

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    results: dict[str, Any] = {}
    # data parallel: global batch 2 split over the ranks
    for case in CASES:
        results[f"dp/{case}"] = _train(case, 2 // world, rank, world, t5_dir, sequence_parallel=False)
    # sequence parallel: the whole world is one model-parallel group sharing data-parallel rank 0
    mpu.initialize_model_parallel(world)
    dp_rank, dp_world = distributed.get_data_parallel_rank(), distributed.get_data_parallel_world_size()
    for case in CASES:
        results[f"sp/{case}"] = _train(case, 1, dp_rank, dp_world, t5_dir, sequence_parallel=True)
    mpu.destroy_model_parallel()
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    tmp = tmp_path_factory.mktemp("parallel_step")
    t5_dir = str(make_tiny_t5(tmp / "t5", d_model=32))
    return {world: run_ranks(_worker, world, tmp / f"world{world}", t5_dir) for world in (1, 2)}


def _assert_same_state(pair: list[dict[str, Any]], single: dict[str, Any], what: str) -> None:
    for key, rtol in RTOL.items():
        assert single[key] and pair[0][key].keys() == single[key].keys()
        largest = max(t.abs().max().item() for t in single[key].values())
        for name, expected in single[key].items():
            for rank, r in enumerate(pair):
                assert_close(r[key][name], expected, f"{what} {key} {name} rank {rank}", rtol=rtol, scale=1e-2 * largest)


@pytest.mark.parametrize("case", sorted(CASES))
def test_data_parallel_step_equals_one_rank_with_the_whole_batch(runs: dict[int, list[dict[str, Any]]], case: str) -> None:
    (single,), pair = [r[f"dp/{case}"] for r in runs[1]], [r[f"dp/{case}"] for r in runs[2]]
    assert pair[0]["losses"][0] != pair[1]["losses"][0]  # different samples, whose mean is the one-rank loss
    for i in range(STEPS):
        mean = sum(r["losses"][i] for r in pair) / 2
        assert mean == pytest.approx(single["losses"][i], rel=1e-6, abs=0), f"step {i + 1} loss"
    _assert_same_state(pair, single, f"dp/{case}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_sequence_parallel_step_equals_one_rank(runs: dict[int, list[dict[str, Any]]], case: str) -> None:
    (single,), pair = [r[f"sp/{case}"] for r in runs[1]], [r[f"sp/{case}"] for r in runs[2]]
    tokens = single["tokens_seen"]  # 16 text + 3 x 4 x 6 patches
    assert [r["tokens_seen"] for r in pair] == [tokens // 2, tokens - tokens // 2]
    for i in range(STEPS):
        for r in pair:  # the same sample on both ranks: the same loss
            assert r["losses"][i] == pytest.approx(single["losses"][i], rel=1e-5, abs=0), f"step {i + 1} loss"
    _assert_same_state(pair, single, f"sp/{case}")

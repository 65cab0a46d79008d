"""Ulysses sequence parallelism inside the DeepSpeed training step: 2 gloo ranks forming one
model-parallel group (each rank runs the DiT layers on half the tokens, one of the two heads)
train exactly like 1 rank, with ZeRO-2 (LoRA) and ZeRO-3 (full fine-tune).

The ranks are set up as `train(args)` sets them up with `sequence_parallel` on: SAT's
model-parallel groups, the data-parallel rank (shared by the group) choosing the samples,
`enable_sequence_parallel` on the engine, DeepSpeed without a model-parallel unit. Compared with
one process: each step's loss, the full gradients after DeepSpeed's reduction and the fp32 weights
and Adam moments after the first step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _parallel_testkit import assert_close, run_ranks
from _zero_testkit import build_engine, ds_config, initialize, optimizer_view, samples, step, trainable

pytestmark = pytest.mark.slow  # ~30 s on 2 cores: DeepSpeed worlds of 1 and 2 processes

STEPS = 2
CASES = {"zero2_lora": (2, "tiny_t2v_lora"), "zero3_full": (3, "tiny_t2v")}
RTOL = {"grads": 1e-5, "exp_avg": 1e-5, "exp_avg_sq": 2e-5, "weights": 1e-3}  # weights: see test_zero_data_parallel


def _worker(rank: int, world: int, t5_dir: str) -> dict[str, Any]:
    import deepspeed
    from deepspeed.utils import safe_get_full_grad
    from sat import mpu

    from cogvideox_sat import distributed
    from cogvideox_sat.training.data import ResumableShardSampler
    from cogvideox_sat.training.main import enable_sequence_parallel, optimizer_config

    mpu.initialize_model_parallel(world)  # the whole world is one model-parallel group
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    data = samples(4)
    results = {}
    for case, (stage, model) in CASES.items():
        engine = build_engine(model, stage, t5_dir)
        enable_sequence_parallel(engine)
        seen: list[int] = []
        attention = engine.diffusion_model.transformer.layers[0].attention
        attention.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
        ds_engine = initialize(engine, optimizer_config(ds_config(stage, 1), torch.device("cpu")))
        order = iter(ResumableShardSampler(len(data), distributed.get_data_parallel_rank(), distributed.get_data_parallel_world_size(), seed=3))
        out: dict[str, Any] = {"losses": []}
        for i in range(STEPS):
            loss, _ = step(ds_engine, [data[next(order)]])
            out["losses"].append(loss)
            if i == 0:
                out["grads"] = {n: safe_get_full_grad(p).clone() for n, p in trainable(ds_engine)}
            ds_engine.step()
            if i == 0:
                out.update(optimizer_view(ds_engine))
        out["tokens_seen"] = seen[0]
        results[case] = out
        ds_engine.destroy()
    mpu.destroy_model_parallel()
    return results


def test_two_sequence_parallel_ranks_train_like_one(tmp_path: Path) -> None:
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    t5_dir = str(make_tiny_t5(tmp_path / "t5", d_model=32))
    (single,) = run_ranks(_worker, 1, tmp_path / "one", t5_dir)
    pair = run_ranks(_worker, 2, tmp_path / "two", t5_dir)
    for case in CASES:
        ref = single[case]
        tokens = ref["tokens_seen"]  # 16 text + 3 x 4 x 6 patches
        assert [r[case]["tokens_seen"] for r in pair] == [tokens // 2, tokens - tokens // 2]
        for i in range(STEPS):
            for r in pair:
                assert r[case]["losses"][i] == pytest.approx(ref["losses"][i], rel=1e-5, abs=0), f"{case} step {i + 1}"
        for key, rtol in RTOL.items():
            largest = max(t.abs().max().item() for t in ref[key].values())
            for name, expected in ref[key].items():
                for rank, r in enumerate(pair):
                    assert_close(r[case][key][name], expected, f"{case} {key} {name} rank {rank}", rtol=rtol, scale=1e-2 * largest)

"""The EMA of FusedEmaAdam under DeepSpeed ZeRO-1/2/3 on 1 and 2 gloo ranks (fp32, CPU).

Each rank keeps the shadow of its own piece of the fp32 master weights (`training.ema`); the test
computes the official recurrence independently on the *whole* master weights (gathered after each
step with DeepSpeed's `safe_get_full_fp32_param`) and requires the gathered shadow to equal it bit
for bit, on both process counts. Then `save` writes the EMA file and a fresh `WeightEma` restores
shadow and step count from it exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _parallel_testkit import run_ranks
from _zero_testkit import build_engine, ds_config, initialize, samples, step, trainable

pytestmark = pytest.mark.slow  # DeepSpeed worlds of 1 and 2 processes, 4 cases each

STEPS = 3
CASES = {"zero1_lora": (1, "tiny_t2v_lora"), "zero2_full": (2, "tiny_t2v"), "zero3_full": (3, "tiny_t2v"), "zero3_lora": (3, "tiny_t2v_lora")}
OPTIMIZER = {"type": "sat.ops.FusedEmaAdam", "params": {"lr": 0.01, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-4, "ema_decay": 0.5}}


def _case(case: str, rank: int, world: int, t5_dir: str, out: Path) -> dict[str, Any]:
    from deepspeed.utils import safe_get_full_fp32_param

    from cogvideox_sat.training.ema import WeightEma, ema_settings
    from cogvideox_sat.training.main import optimizer_config

    stage, model = CASES[case]
    config = ds_config(stage, 1)
    config["optimizer"] = OPTIMIZER
    ds_engine = initialize(build_engine(model, stage, t5_dir), optimizer_config(config, torch.device("cpu")))
    settings = ema_settings(OPTIMIZER)
    ema = WeightEma(ds_engine.module, settings)
    reference = {n: safe_get_full_fp32_param(p).clone() for n, p in trainable(ds_engine)}
    data = samples(STEPS * world)
    for i in range(STEPS):
        step(ds_engine, [data[i * world + rank]])
        ds_engine.step()
        ema.update()
        d = np.float32(settings.decay_at(i + 1))
        for n, p in trainable(ds_engine):
            reference[n].mul_(float(d)).add_(safe_get_full_fp32_param(p), alpha=float(np.float32(1) - d))
    gathered = {n: ema.full(n) for n in reference}
    final = {n: safe_get_full_fp32_param(p).clone() for n, p in trainable(ds_engine)}
    names = sorted(reference)
    target = out / case / "3-ema" / "mp_rank_00_model_states.pt"
    weights = {n: torch.zeros(1) for n in names} | {"frozen.buffer": torch.ones(2)}
    ema.save(weights, target, 3)
    torch.distributed.barrier()
    restored = WeightEma(ds_engine.module, settings)
    restored.load(target)
    same_after_load = all(torch.equal(restored.shadow[n], ema.shadow[n]) for n in names) and restored.num_updates == STEPS
    ds_engine.destroy()
    return {"gathered": gathered, "reference": reference, "restored": same_after_load, "final": final, "file": str(target)}


def _worker(rank: int, world: int, t5_dir: str, out: str) -> dict[str, Any]:
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    return {case: _case(case, rank, world, t5_dir, Path(out) / f"world{world}") for case in CASES}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    tmp = tmp_path_factory.mktemp("ema_zero")
    t5_dir = str(make_tiny_t5(tmp / "t5", d_model=32))
    return {world: run_ranks(_worker, world, tmp / f"out{world}", t5_dir, str(tmp)) for world in (1, 2)}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("world", [1, 2])
def test_partitioned_shadow_equals_the_recurrence_on_whole_weights(runs: dict[int, list[dict[str, Any]]], case: str, world: int) -> None:
    for rank, result in enumerate(runs[world]):
        r = result[case]
        assert r["gathered"].keys() == r["reference"].keys() and r["reference"]
        for name, expected in r["reference"].items():
            assert torch.equal(r["gathered"][name], expected), f"rank {rank} {name}"
        assert r["restored"], f"rank {rank}: load did not restore the shadow and step count exactly"


@pytest.mark.parametrize("case", sorted(CASES))
def test_ema_file_keeps_the_weights_keys_and_the_step_count(runs: dict[int, list[dict[str, Any]]], case: str) -> None:
    r = runs[2][0][case]
    blob = torch.load(r["file"], map_location="cpu", weights_only=True)
    assert blob["ema"]["num_updates"] == STEPS and blob["iteration"] == 3
    assert set(blob["module"]) == set(r["reference"]) | {"frozen.buffer"}
    assert torch.equal(blob["module"]["frozen.buffer"], torch.ones(2))  # not trainable: kept as saved
    for name, expected in r["reference"].items():
        assert blob["module"][name].dtype == torch.float32 and torch.equal(blob["module"][name], expected)
    # the EMA lags the trained weights: a shadow that only copied the weights would fail here
    assert any(not torch.equal(blob["module"][n], r["final"][n]) for n in r["reference"])

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

import argparse
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
from _parallel_testkit import assert_close, run_ranks
from omegaconf import OmegaConf

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # ~30 s on 2 cores: two DeepSpeed worlds (1 and 2 processes), 3 cases each

GLOBAL_BATCH = 2
STEPS = 2
N_SAMPLES = 2 * GLOBAL_BATCH * STEPS  # an epoch longer than the steps: no wrap-around
LATENT = (3, 4, 8, 12)  # (t, c, h, w) of a 9x64x96 clip in the demo model
# Adam's first update is g / (|g| + eps): for gradients near eps it magnifies fp32 noise, so the
# weights after the step get a looser bound than the gradients and moments they come from.
RTOL = {"grads": 1e-5, "exp_avg_sq": 2e-5, "weights": 1e-3}
CASES = {
    "zero2_lora": (2, "tiny_t2v_lora"),
    "zero3_full": (3, "tiny_t2v"),
    "zero3_lora": (3, "tiny_t2v_lora"),
}


def _model_config(name: str, t5_dir: str) -> Any:
    cfg = OmegaConf.load(REPO / "configs" / "demo" / f"{name}.yaml").model
    t5 = cfg.conditioner_config.params.emb_models[0]
    t5.params.model_dir = t5_dir
    t5.ucg_rate = 0.0  # text dropout draws from the global RNG; the test pins every draw
    return cfg


def _ds_config(stage: int, micro: int) -> dict[str, Any]:
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "demo" / "sft_tiny.yaml").deepspeed)
    cfg["train_micro_batch_size_per_gpu"] = micro
    cfg["zero_optimization"] = {"stage": stage}
    return cfg


def _samples() -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(123)
    words = ["red", "blue", "green", "bar", "square", "moving", "left", "up"]
    return [
        {"latents": torch.randn(*LATENT, generator=gen), "txt": f"a {words[i % 8]} {words[(3 * i + 1) % 8]} sample {i}"}
        for i in range(N_SAMPLES)
    ]


def _pin_draw_per_sample(loss_fn: Any) -> None:
    """Replace `loss_fn.draw` by the same draw made sample by sample from the sample's bytes."""
    draw = loss_fn.draw

    def per_sample(x: torch.Tensor) -> Any:
        draws = []
        for row in x:
            with torch.random.fork_rng():
                torch.manual_seed(zlib.crc32(row.detach().float().numpy().tobytes()))
                draws.append(draw(row[None]))
        first = draws[0]
        return type(first)(*(torch.cat(parts) for parts in zip(*(d.tensors() for d in draws))))

    loss_fn.draw = per_sample


def _worker(rank: int, world: int, t5_dir: str) -> dict[str, Any]:
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad, safe_get_full_optimizer_state

    from cogvideox_sat.engine import SATVideoDiffusionEngine
    from cogvideox_sat.training.data import ResumableShardSampler
    from cogvideox_sat.training.main import hide_frozen_modules_from_zero3, optimizer_config, param_groups

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    micro = GLOBAL_BATCH // world
    samples = _samples()
    results = {}
    for case, (stage, model) in CASES.items():
        torch.manual_seed(0)  # same init everywhere (DeepSpeed also broadcasts rank 0's weights)
        engine = SATVideoDiffusionEngine(argparse.Namespace(model_config=_model_config(model, t5_dir), fp16=False, bf16=False, device="cpu"))
        engine.disable_untrainable_params()
        _pin_draw_per_sample(engine.loss_fn)
        if stage == 3:
            hide_frozen_modules_from_zero3(engine, torch.device("cpu"), torch.float32)
        ds_engine, *_ = deepspeed.initialize(
            model=engine,
            model_parameters=param_groups(engine),
            config=optimizer_config(_ds_config(stage, micro), torch.device("cpu")),
            dist_init_required=False,
        )
        order = iter(ResumableShardSampler(len(samples), rank, world, seed=7))
        trainable = [(n, p) for n, p in ds_engine.module.named_parameters() if p.requires_grad]
        out: dict[str, Any] = {"losses": []}
        for step in range(STEPS):
            picked = [samples[next(order)] for _ in range(micro)]
            batch = {"latents": torch.stack([s["latents"] for s in picked]), "txt": [s["txt"] for s in picked]}
            loss, _ = ds_engine.module(batch["latents"], batch)
            ds_engine.backward(loss)
            out["losses"].append(float(loss.detach()))
            if step == 0:
                out["grads"] = {n: safe_get_full_grad(p).clone() for n, p in trainable}
            ds_engine.step()
            if step == 0:
                out["weights"] = {n: safe_get_full_fp32_param(p).clone() for n, p in trainable}
                out["exp_avg_sq"] = {n: safe_get_full_optimizer_state(p, "exp_avg_sq").clone() for n, p in trainable}
        out["n_trainable"] = len(trainable)
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

"""benchmarks/dit_step.py runs (tiny, CPU) for a RoPE I2V config and a LoRA config."""

from __future__ import annotations

import pytest

from tests.benchmarks import load_benchmark
from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("dit_step", "dit_step_bench")


def test_tiny_lora_and_full_runs(bench, capsys):
    results = bench.main([str(REPO / "configs" / "cogvideox_2b_lora.yaml"), "--tiny", "--dtype", "fp32", "--checkpoint", "none", "selective"])
    assert [(r.mode, r.checkpoint) for r in results] == [("LoRA r4", "none"), ("LoRA r4", "selective")]
    assert all(r.seconds > 0 and r.trainable == 2 * 8 * 4 * 64 for r in results)  # layers x tensors x r x hidden
    results = bench.main([str(REPO / "configs" / "cogvideox1.5_5b_i2v.yaml"), "--tiny", "--dtype", "fp32", "--full"])
    assert results[0].mode == "full" and results[0].checkpoint == "full"
    assert "TFLOP/s" in capsys.readouterr().out


def test_flop_count_matches_reference_figures(bench):
    # REFERENCE.md: per 2B layer at 49x480x720, forward matmuls 1.6 TFLOP, attention 2.4 TFLOP.
    import torch

    from cogvideox_sat.registry import instantiate_from_config

    cfg = bench.network_config([str(REPO / "configs" / "cogvideox_2b.yaml")])
    with torch.device("meta"):
        model = instantiate_from_config(cfg)
    kwargs = bench.make_inputs(model, 1, 49, 480, 720, "meta", torch.bfloat16)
    assert tuple(kwargs["x"].shape) == (1, 13, 16, 60, 90)
    seq = 226 + 13 * 30 * 45
    matmul, attn = 2 * seq * 12 * 1920**2, 4 * seq**2 * 1920
    assert round(matmul / 1e12, 1) == 1.6 and round(attn / 1e12, 1) == 2.4
    # backward: attention and activation gradients always, weight gradients only when trained
    assert bench.step_flops(model, kwargs, frozen_base=True) == 30 * (2 * matmul + 3 * attn)
    assert bench.step_flops(model, kwargs, frozen_base=False) == 30 * (3 * matmul + 3 * attn)

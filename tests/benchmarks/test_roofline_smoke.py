"""benchmarks/roofline.py on the CPU (--tiny): the bounds add up per checkpointing policy."""

from __future__ import annotations

import pytest
import torch

from tests.benchmarks import load_benchmark
from tests.conftest import REPO


@pytest.fixture
def roofline(monkeypatch):
    """benchmarks/roofline.py as a module (registered while the test runs: its dataclasses need it)."""
    return load_benchmark("roofline", monkeypatch=monkeypatch)


def test_roofline_tiny_orders_the_bounds(roofline, capsys):
    result = roofline.main([str(REPO / "configs" / "cogvideox_2b.yaml"), "--tiny", "--lora-rank", "4", "--diffusers-s", "1.0"])
    bounds = result["math"]
    assert 0 < bounds["no recompute"] < bounds["selective"] < bounds["full"]
    out = capsys.readouterr().out
    assert "24 layers" not in out and "2 layers" in out and "x)" in out


def test_bounds_count_recomputation(roofline):
    proj = {"forward": 1.0, "input_grad": 2.0, "weight_grad": 4.0, "lora": 0.5}
    lora = roofline.bounds(proj, attn_fwd=10.0, attn_both=30.0, layers=2, lora=True)
    assert lora == {"no recompute": 2 * (1 + 2 + 0.5 + 30), "selective": 2 * (1 + 2 + 0.5 + 30 + 1), "full": 2 * (1 + 2 + 0.5 + 30 + 1 + 10)}
    full = roofline.bounds(proj, attn_fwd=10.0, attn_both=30.0, layers=1, lora=False)
    assert full["no recompute"] == 1 + 2 + 4 + 30


def test_fa4_is_reported_unavailable_where_it_cannot_run(roofline):
    # on a CPU (or without flash-attn-4) the fa4 row must say why instead of timing something else
    shapes = roofline.Shapes(layers=1, hidden=128, heads=2, mlp=512, tokens=64)
    with pytest.raises(RuntimeError, match="FlashAttention-4"):
        roofline.attention_time(shapes, "fa4", torch.device("cpu"), torch.bfloat16, repeat=1)


def test_sampling_bound_counts_steps_layers_and_decode(roofline):
    proj = {"forward": 1.0, "input_grad": 2.0, "weight_grad": 4.0, "lora": 0.5}
    bound = roofline.sampling_bound(proj, attn_fwd=3.0, layers=2, steps=50, decode_s=7.0)
    # forward only: no gradient matmuls, attention forward once per layer and step
    assert bound == {"step": 2 * (1.0 + 3.0), "video": 50 * 8.0 + 7.0}


def test_roofline_tiny_sampling(roofline, capsys):
    result = roofline.main([str(REPO / "configs" / "cogvideox_2b.yaml"), "--tiny", "--sampling", "--steps", "4", "--decode-s", "1.5", "--target-s", "3"])
    bound = result["math"]
    assert bound["video"] == pytest.approx(4 * bound["step"] + 1.5)
    out = capsys.readouterr().out
    assert "CFG as one batch of 2" in out and "vs target" in out and "2 layers" in out


@pytest.mark.parametrize("extra", [["--sampling", "--full"], ["--sampling", "--diffusers-s", "1.0"], ["--decode-s", "2.0"], ["--target-s", "22.5"]])
def test_options_of_the_other_bound_are_refused(roofline, extra, capsys):
    with pytest.raises(SystemExit):
        roofline.main([str(REPO / "configs" / "cogvideox_2b.yaml"), "--tiny", *extra])
    err = capsys.readouterr().err
    assert "need --sampling" in err or "bound a training step" in err


def test_fp8_matmuls_compute_the_projection_and_its_gradients(roofline):
    # 20 tokens: not a multiple of 16, so the weight gradient's inner size is padded (with zeros)
    torch.manual_seed(0)
    x, w, g = torch.randn(20, 32), torch.randn(48, 32), torch.randn(20, 48)
    kernels = roofline.fp8_matmuls(x, w, g)
    for part, expected in {"forward": x @ w.t(), "input_grad": g @ w, "weight_grad": g.t() @ x}.items():
        got = kernels[part]().float()
        assert got.shape == expected.shape
        assert (got - expected).norm() / expected.norm() < 0.1, part  # e4m3 / e5m2 rounding only


def test_roofline_tiny_fp8(roofline, capsys):
    result = roofline.main([str(REPO / "configs" / "cogvideox_2b.yaml"), "--tiny", "--lora-rank", "4", "--fp8"])
    assert 0 < result["math"]["no recompute"] < result["math"]["selective"]
    assert "FP8 projections" in capsys.readouterr().out

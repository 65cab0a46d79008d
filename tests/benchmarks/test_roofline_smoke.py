"""benchmarks/roofline.py on the CPU (--tiny): the bounds add up per checkpointing policy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def test_roofline_tiny_orders_the_bounds(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("roofline", REPO / "benchmarks" / "roofline.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "roofline", module)
    spec.loader.exec_module(module)
    result = module.main([str(REPO / "configs" / "cogvideox_2b.yaml"), "--tiny", "--lora-rank", "4", "--diffusers-s", "1.0"])
    bounds = result["math"]
    assert 0 < bounds["no recompute"] < bounds["selective"] < bounds["full"]
    out = capsys.readouterr().out
    assert "24 layers" not in out and "2 layers" in out and "x)" in out


def test_bounds_count_recomputation():
    spec = importlib.util.spec_from_file_location("roofline_b", REPO / "benchmarks" / "roofline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["roofline_b"] = module
    try:
        spec.loader.exec_module(module)
        proj = {"forward": 1.0, "input_grad": 2.0, "weight_grad": 4.0, "lora": 0.5}
        lora = module.bounds(proj, attn_fwd=10.0, attn_both=30.0, layers=2, lora=True)
        assert lora == {"no recompute": 2 * (1 + 2 + 0.5 + 30), "selective": 2 * (1 + 2 + 0.5 + 30 + 1), "full": 2 * (1 + 2 + 0.5 + 30 + 1 + 10)}
        full = module.bounds(proj, attn_fwd=10.0, attn_both=30.0, layers=1, lora=False)
        assert full["no recompute"] == 1 + 2 + 4 + 30
    finally:
        sys.modules.pop("roofline_b", None)


def test_fa4_is_reported_unavailable_where_it_cannot_run():
    # on a CPU (or without flash-attn-4) the fa4 row must say why instead of timing something else
    spec = importlib.util.spec_from_file_location("roofline_c", REPO / "benchmarks" / "roofline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["roofline_c"] = module
    try:
        spec.loader.exec_module(module)
        shapes = module.Shapes(layers=1, hidden=128, heads=2, mlp=512, tokens=64)
        with pytest.raises(RuntimeError, match="FlashAttention-4"):
            module.attention_time(shapes, "fa4", torch.device("cpu"), torch.bfloat16, repeat=1)
    finally:
        sys.modules.pop("roofline_c", None)

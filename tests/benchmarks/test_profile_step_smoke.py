"""benchmarks/profile_step.py: kernel names sort into categories; busy time counts overlaps once."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def profile_step():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("profile_step", REPO / "benchmarks" / "profile_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_categories(profile_step):
    cat = profile_step.category
    assert cat("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x128x64") == "attention"
    assert cat("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64") == "matmul"
    assert cat("nvjet_hsh_256x128_64x4_2x1_v_bz_coopA_TNT") == "matmul"
    assert cat("triton_per_fused_add_mul_native_layer_norm_3") == "fused (triton)"
    assert cat("void at::native::elementwise_kernel<128, 4>") == "elementwise"
    assert cat("void at::native::(anonymous namespace)::CatArrayBatchedCopy<...>") == "copy / cat"
    assert cat("Memset (Device)") == "fill"
    assert cat("something_new") == "other"


def test_busy_time_is_the_union_of_kernel_ranges(profile_step):
    events = [("a", 0.0, 10.0), ("b", 5.0, 10.0), ("c", 30.0, 5.0)]  # a and b overlap on two streams
    assert profile_step.busy_us(events) == 20.0


def test_tiny_cpu_run_reports_the_step(profile_step, capsys):
    summary = profile_step.main([str(REPO / "configs" / "cogvideox_2b_lora.yaml"), "--tiny", "--lora-rank", "4", "--setting", "selective", "--top", "0"])
    assert summary["wall"] > 0 and summary["idle"] <= summary["wall"]
    assert "idle (gaps)" in capsys.readouterr().out

"""benchmarks/profile_step.py: kernel names sort into categories; busy time counts overlaps once."""

from __future__ import annotations

import pytest

from tests.benchmarks import load_benchmark
from tests.conftest import REPO


@pytest.fixture(scope="module")
def profile_step():
    return load_benchmark("profile_step")


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

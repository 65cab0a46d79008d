"""benchmarks/sample_speed.py runs on the CPU (--tiny) and reports seconds per video."""

from __future__ import annotations

from tests.benchmarks import load_benchmark
from tests.conftest import REPO


def test_sample_speed_tiny_reports_seconds_per_video(capsys):
    module = load_benchmark("sample_speed")
    result = module.main(["--tiny", "--base", str(REPO / "configs" / "demo" / "tiny_i2v.yaml")])
    assert result["latent"] == [3, 4, 8, 12] and result["steps"] == 4 and result["video"] == "9x64x96"
    assert result["seconds_per_video"] > 0 and result["decode_s"] > 0
    assert abs(result["seconds_per_video"] - result["sampling_s"] - result["decode_s"]) < 0.02
    assert "s per video" in capsys.readouterr().out


def test_speed_switches_reach_the_config_and_the_report():
    module = load_benchmark("sample_speed", "sample_speed_switches")
    base = [str(REPO / "configs" / "demo" / "tiny_t2v.yaml")]
    args = module.parse_args(["--tiny", "--compile", "--attention-backend", "math", "--step-cache", "1000"])
    cfg = module.model_config(base, 4, args)
    assert cfg.network_config.params.transformer_args.compile is True
    assert cfg.network_config.params.transformer_args.attention_backend == "math"
    assert cfg.sampler_config.params.step_cache_threshold == 1000
    plain = module.model_config(base, 4, module.parse_args(["--tiny"]))
    assert "step_cache_threshold" not in plain.sampler_config.params
    result = module.main(["--tiny", "--attention-backend", "math", "--step-cache", "1000"])
    assert result["attention_backend"] == "math" and result["step_cache"].startswith("skipped 3/4 steps at 1000, change per step min/median/max ")

"""benchmarks/sample_speed.py runs on the CPU (--tiny) and reports seconds per video."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def test_sample_speed_tiny_reports_seconds_per_video(capsys):
    spec = importlib.util.spec_from_file_location("sample_speed", REPO / "benchmarks" / "sample_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--tiny", "--base", str(REPO / "configs" / "demo" / "tiny_i2v.yaml")])
    assert result["latent"] == [3, 4, 8, 12] and result["steps"] == 4 and result["video"] == "9x64x96"
    assert result["seconds_per_video"] > 0 and result["decode_s"] > 0
    assert abs(result["seconds_per_video"] - result["sampling_s"] - result["decode_s"]) < 0.02
    assert "s per video" in capsys.readouterr().out

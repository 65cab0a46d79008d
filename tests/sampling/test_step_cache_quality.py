"""benchmarks/step_cache_quality.py on the tiny text-to-video model (CPU): the uncached video is the
reference, a threshold that never fires changes nothing, one that always fires skips every step
it can and moves the video."""

from __future__ import annotations

from pathlib import Path

from conftest import DEMO

from tests.benchmarks import load_benchmark


def test_thresholds_against_the_uncached_video(assets, tmp_path: Path, monkeypatch, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square slides right\na blue circle grows\nnot sampled\n")
    bench = load_benchmark("step_cache_quality", monkeypatch=monkeypatch)
    outcomes = bench.main([
        "--base", str(DEMO / "tiny_t2v.yaml"), str(DEMO / "inference_tiny.yaml"), str(assets["overlay"]),
        "--load", str(assets["t2v"]), "--input-file", str(prompts), "--device", "cpu",
        "--thresholds", "1e-9", "1000", "--prompts", "2",
    ])
    reference, never, always = outcomes
    assert reference.threshold is None and len(reference.seconds) == 2 and not reference.psnr
    steps_per_video = never.steps // 2
    assert never.skipped == 0 and min(never.psnr) > 100  # identical videos (PSNR capped at ~126 dB)
    assert always.steps == never.steps and always.skipped == 2 * (steps_per_video - 1)  # all but each video's first step
    assert max(always.psnr) < 100
    out = capsys.readouterr().out
    assert "2 prompt(s)" in out and f"{always.skipped}/{always.steps}" in out and "speed-up" in out

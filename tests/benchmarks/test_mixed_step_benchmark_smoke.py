"""benchmarks/mixed_step.py on the CPU (--tiny): a LoRA step on a batch of stills and one on a
batch of clips through the engine (VAE, T5, loss, AdamW), both losses finite."""

from __future__ import annotations

import math

from tests.benchmarks import load_benchmark


def test_mixed_step_tiny(tmp_path, capsys, monkeypatch):
    module = load_benchmark("mixed_step", monkeypatch=monkeypatch)
    results = module.main(["--tiny", "--work", str(tmp_path)])
    assert set(results) == {"image", "video"}
    assert all(math.isfinite(r["loss"]) and r["seconds"] > 0 for r in results.values())
    out = capsys.readouterr().out
    assert "image  batch 2x1x64x96" in out and "video  batch 1x9x64x96" in out

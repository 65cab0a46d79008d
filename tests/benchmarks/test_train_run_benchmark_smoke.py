"""benchmarks/train_run.py on the CPU (--tiny): train_video.py on pixels and on a latent cache it
builds first, plus the transformer alone; the cached run skips the VAE, so it is faster. (Its
shard-cache mode runs tools/build_latent_cache.py --shards, which
tests/data/test_data_shard_cache.py runs end to end.)"""

from __future__ import annotations

import math

import pytest

from tests.benchmarks import load_benchmark


@pytest.mark.slow
def test_train_run_tiny_pixels_and_cache(tmp_path, capsys, monkeypatch):
    module = load_benchmark("train_run", monkeypatch=monkeypatch)
    pixels, cached = module.main(["--tiny", "--data", "pixels", "cache", "--dit-only", "--work", str(tmp_path)])
    assert pixels.steps == cached.steps == 4
    assert all(math.isfinite(r.final_loss) and r.median_s > 0 for r in (pixels, cached))
    assert cached.setup_s > 0 and (tmp_path / "cache").is_dir()
    assert cached.median_s < pixels.median_s  # no VAE encode per step
    out = capsys.readouterr().out
    assert "latent cache" in out and "DiT alone" in out and "vs DiT-only" in out

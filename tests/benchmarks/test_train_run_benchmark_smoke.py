"""benchmarks/train_run.py on the CPU (--tiny): train_video.py on pixels and on a latent cache it
builds first, plus the transformer alone; the cached run skips the VAE, so it is faster. (Its
shard-cache mode runs tools/build_latent_cache.py --shards, which
tests/data/test_data_shard_cache.py runs end to end.)"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_train_run_tiny_pixels_and_cache(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("train_run", REPO / "benchmarks" / "train_run.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_run", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    pixels, cached = module.main(["--tiny", "--data", "pixels", "cache", "--dit-only", "--work", str(tmp_path)])
    assert pixels.steps == cached.steps == 4
    assert all(math.isfinite(r.final_loss) and r.median_s > 0 for r in (pixels, cached))
    assert cached.setup_s > 0 and (tmp_path / "cache").is_dir()
    assert cached.median_s < pixels.median_s  # no VAE encode per step
    out = capsys.readouterr().out
    assert "latent cache" in out and "DiT alone" in out and "vs DiT-only" in out

"""benchmarks/mixed_step.py on the CPU (--tiny): a LoRA step on a batch of stills and one on a
batch of clips through the engine (VAE, T5, loss, AdamW), both losses finite."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_mixed_step_tiny(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("mixed_step", REPO / "benchmarks" / "mixed_step.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "mixed_step", module)
    spec.loader.exec_module(module)
    results = module.main(["--tiny", "--work", str(tmp_path)])
    assert set(results) == {"image", "video"}
    assert all(math.isfinite(r["loss"]) and r["seconds"] > 0 for r in results.values())
    out = capsys.readouterr().out
    assert "image  batch 2x1x64x96" in out and "video  batch 1x9x64x96" in out

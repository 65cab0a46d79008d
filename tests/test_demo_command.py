"""The README's first command: `bash finetune_single_gpu.sh` runs the demo end to end.

Runs in a copy of the repository so the demo's folders (demo_assets/, runs/, outputs/) do not
land in the checkout under test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

KEEP = ("cogvideox_sat", "configs", "tools", "train_video.py", "sample_video.py", "finetune_single_gpu.sh")


def test_demo_trains_base_and_lora_then_samples(tmp_path: Path) -> None:
    for name in KEEP:
        src = REPO / name
        (shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() else shutil.copy(src, tmp_path / name))
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(["bash", "finetune_single_gpu.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo done" in proc.stdout

    base = sorted((tmp_path / "runs/demo").glob("demo-base-*"))[-1]
    lora = sorted((tmp_path / "runs/demo").glob("demo-lora-*"))[-1]
    for run in (base, lora):
        assert (run / "latest").read_text().strip() == "20"
        assert (run / "20" / "mp_rank_00_model_states.pt").is_file()
        assert (run / "metrics.jsonl").is_file()
    videos = sorted((tmp_path / "outputs/demo").rglob("*.mp4"))
    assert len(videos) == 2  # one per prompt in configs/demo/prompts.txt
    frames = iio.imread(videos[0])
    assert frames.shape == (9, 64, 96, 3)
    assert sorted((tmp_path / "outputs/demo").rglob("*.png"))

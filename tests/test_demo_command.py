"""The README's first command: `bash finetune_single_gpu.sh` runs the demo end to end and shows
that training learns (the learning report's verdict), within the 5-minute budget on 2 cores.

Runs in a copy of the repository so the demo's folders (demo_assets/, runs/, outputs/) do not
land in the checkout under test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

KEEP = ("cogvideox_sat", "configs", "tools", "train_video.py", "sample_video.py", "finetune_single_gpu.sh")


def test_demo_learns_base_and_lora_then_reports(tmp_path: Path) -> None:
    for name in KEEP:
        src = REPO / name
        (shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() else shutil.copy(src, tmp_path / name))
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    start = time.perf_counter()
    proc = subprocess.run(["bash", "finetune_single_gpu.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo done" in proc.stdout

    # 1. the VAE reconstructs (a random one scores ~9 dB) and the report says every claim holds
    psnr = float(proc.stdout.split("reconstruction PSNR ")[1].split(" dB")[0])
    assert psnr >= 16.0, proc.stdout
    report = json.loads((tmp_path / "outputs/demo/learning_report.json").read_text())
    assert report["learned"], report["verdict"]
    assert report["base_loss"]["ratio"] > 2 and report["lora_loss"]["ratio"] > 2, report
    assert report["verdict"] in proc.stdout and (tmp_path / "outputs/demo/learning_report.png").stat().st_size > 10_000
    assert set(report["times_s"]) == {"assets", "cache", "base", "lora", "sampling"}

    # 2. the runs and the samples in the official layout, one folder per caption of both stages
    base = sorted((tmp_path / "runs/demo").glob("demo-base-*"))[-1]
    lora = sorted((tmp_path / "runs/demo").glob("demo-lora-*"))[-1]
    for run, iters in ((base, "1500"), (lora, "300")):
        assert (run / "latest").read_text().strip() == iters
        assert (run / iters / "mp_rank_00_model_states.pt").is_file()
    captions = (tmp_path / "demo_assets/prompts.txt").read_text().splitlines()
    assert len(captions) == 6
    for variant in ("base", "base+lora"):
        texts = sorted((tmp_path / "outputs/demo" / variant).glob("*/0/text.txt"))
        assert sorted(t.read_text() for t in texts) == sorted(captions)
        for text in texts:
            assert iio.imread(text.parent / "000000.mp4").shape == (9, 64, 96, 3)
            assert (text.parent / "000000.png").is_file()
    # the 5-minute budget, with slack for a busy CI machine
    assert seconds < 420, f"demo took {seconds:.0f} s"

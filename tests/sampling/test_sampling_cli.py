"""The real command line: sample_video.py as a process, and a LoRA run trained by train_video.py
sampled on top of its base (what users do after the demo fine-tune)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
import yaml
from conftest import DEMO, FRAMES, HEIGHT, REPO, WIDTH

def run_script(script: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / script), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_sample_video_cli_writes_videos(assets, tmp_path: Path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square slides right\n")
    result = run_script(
        "sample_video.py", "--base", str(DEMO / "tiny_t2v.yaml"), str(DEMO / "inference_tiny.yaml"), str(assets["overlay"]),
        "--load", str(assets["t2v"]), "--input-file", str(prompts), "--output-dir", "out", "--seed", "3", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "out" / "0_a_red_square_slides_right" / "0"
    assert iio.imread(folder / "000000.mp4").shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert (folder / "000000.png").is_file()
    assert "Sampling with VPSDEDPMPP2MSampler" not in result.stderr  # overlay: verbose off
    assert "prompt 0 sample 0" in result.stdout


@pytest.fixture(scope="module")
def trained_lora_run(assets, tmp_path_factory) -> Path:
    """Two LoRA iterations from the tiny T2V base through train_video.py; the run folder."""
    from cogvideox_sat.demo.clips import make_sft_folder

    root = tmp_path_factory.mktemp("lora_run")
    make_sft_folder(root / "data", n_clips=2, num_frames=9, height=64, width=96, fps=8)
    overlay = root / "train_overlay.yaml"
    overlay.write_text(yaml.safe_dump({"args": {
        "load": str(assets["t2v"]), "train_data": [str(root / "data")], "valid_data": None, "eval_interval": None,
        "save": str(root / "runs"), "train_iters": 2, "save_interval": 2, "log_interval": 1, "num_workers": 0,
    }}))
    result = run_script(
        "train_video.py", "--base", str(DEMO / "tiny_t2v_lora.yaml"), str(DEMO / "sft_tiny.yaml"), str(assets["overlay"]), str(overlay),
        cwd=root,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = [p.parent for p in (root / "runs").glob("*/latest")]
    return run


@pytest.mark.slow
def test_trained_lora_run_alone_is_refused_with_its_base_named(assets, trained_lora_run, tmp_path: Path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    result = run_script(
        "sample_video.py", "--base", str(DEMO / "tiny_t2v_lora.yaml"), str(DEMO / "inference_tiny.yaml"), str(assets["overlay"]),
        "--load", str(trained_lora_run), "--input-file", str(prompts), "--output-dir", "out", cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "only LoRA adapters" in result.stderr and str(assets["t2v"]) in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_trained_lora_run_on_its_base_changes_the_samples(make_args, assets, trained_lora_run):
    from cogvideox_sat.sampling import sample

    def z(**attrs) -> torch.Tensor:
        (path,) = [p for p in sample(make_args("tiny_t2v_lora", ["a cat"], "--only-save-latents", **attrs)) if p.name == "latent.pt"]
        return torch.load(path, weights_only=True)

    base, tuned = z(), z(lora_load=str(trained_lora_run))
    assert not torch.equal(base, tuned) and torch.isfinite(tuned).all()


@pytest.mark.slow
def test_torchrun_two_ranks_share_stdin_prompts_and_match_one_process(make_args, assets, tmp_path: Path):
    """Rank 0 reads stdin and broadcasts; prompts alternate between ranks; each video equals the
    one a single process draws for that prompt line (per-prompt seeds)."""
    from cogvideox_sat.sampling import sample

    argv = [
        "--base", str(DEMO / "tiny_t2v.yaml"), str(DEMO / "inference_tiny.yaml"), str(assets["overlay"]),
        "--load", str(assets["t2v"]), "--input-type", "cli", "--output-dir", "out", "--only-save-latents", "--device", "cpu",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(REPO / "sample_video.py"), *argv]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, input="p zero\n\np two\np three\n", capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    got = {p.parent.parent.name: torch.load(p, weights_only=True) for p in (tmp_path / "out").glob("*/0/latent.pt")}
    assert sorted(got) == ["0_p_zero", "2_p_two", "3_p_three"]
    single = make_args("tiny_t2v", ["p zero", "", "p two", "p three"], "--only-save-latents")
    for path in sample(single):
        if path.name == "latent.pt":
            assert torch.equal(got[path.parent.parent.name], torch.load(path, weights_only=True))

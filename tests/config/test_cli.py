"""The scripts' --validate-only contract: merged config + exit 0, or every problem + exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.config.helpers import demo_sample_files, demo_train_files, write_yaml


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script,files", [("train_video.py", demo_train_files), ("sample_video.py", demo_sample_files)])
def test_validate_only_valid_config_exits_0_and_prints_merged(tmp_path: Path, script: str, files) -> None:
    proc = run_script(script, "--base", *files(tmp_path), "--validate-only", "--seed", "123")
    assert proc.returncode == 0, proc.stderr
    assert "network_config:" in proc.stdout and "seed: 123" in proc.stdout
    assert "configuration is valid" in proc.stderr


@pytest.mark.parametrize("script,files", [("train_video.py", demo_train_files), ("sample_video.py", demo_sample_files)])
def test_validate_only_invalid_config_exits_2_with_every_problem(tmp_path: Path, script: str, files) -> None:
    bad = write_yaml(tmp_path / "bad.yaml", {"args": {"seeed": 1, "sampling_image_size": [30, 30]}, "data": {"params": {"video_size": [30, 30]}}})
    proc = run_script(script, "--base", *files(tmp_path), bad, "--validate-only")
    assert proc.returncode == 2
    assert "bad.yaml: args.seeed: unknown key" in proc.stderr and "seed" in proc.stderr
    assert "multiples of 16" in proc.stderr
    assert "network_config:" not in proc.stdout  # no merged config for an invalid run


def test_missing_base_is_a_usage_error() -> None:
    proc = run_script("train_video.py", "--validate-only")
    assert proc.returncode == 2 and "--base is required" in proc.stderr


def test_import_prints_nothing() -> None:
    proc = subprocess.run([sys.executable, "-c", "import cogvideox_sat"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""

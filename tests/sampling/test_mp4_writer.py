"""Without imageio-ffmpeg: sample_video.py stops before any weights load, training's validation
keeps its PNG contact sheets instead of dying on its first video, and save_mp4 names the fix."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

import cogvideox_sat.media as media
import cogvideox_sat.sampling.main as sampling_main
import cogvideox_sat.training.validation as validation
from cogvideox_sat.sampling.outputs import write_video
from cogvideox_sat.training.metrics import MetricsLogger


@pytest.fixture()
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "mp4_writer_available", lambda: False)
    monkeypatch.setattr(sampling_main, "mp4_writer_available", lambda: False)


def video() -> torch.Tensor:
    return torch.linspace(-1, 1, 3 * 3 * 8 * 8).reshape(3, 3, 8, 8)


def test_save_mp4_names_the_missing_package(no_ffmpeg: None, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="needs imageio-ffmpeg .*pip install imageio-ffmpeg"):
        media.save_mp4(video(), tmp_path / "a.mp4", fps=8)


def test_write_video_without_mp4_keeps_the_sheet_and_prompt(tmp_path: Path) -> None:
    written = write_video(video(), tmp_path / "s", fps=8, text="a prompt", mp4=False)
    assert [p.name for p in written] == ["000000.png"]
    assert (tmp_path / "s" / "text.txt").read_text() == "a prompt"
    assert not (tmp_path / "s" / "000000.mp4").exists()


def test_sample_video_stops_before_loading_anything(no_ffmpeg: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampling_main, "place", lambda args: pytest.fail("placed a sampling run without a way to write it"))
    with pytest.raises(SystemExit, match="imageio-ffmpeg.*only_log_video_latents: true"):
        sampling_main.sample(argparse.Namespace(only_log_video_latents=False))


def test_validation_writes_sheets_only(no_ffmpeg: None, tmp_path: Path) -> None:
    frames = np.full((3, 8, 8, 3), 200, dtype=np.uint8)
    sample = validation.ValidationSample(index=0, prompt="a cat", record={"fps": 8}, video=frames, clip=frames)
    logged = {}
    logger = MetricsLogger(tmp_path / "run", enabled=False)
    logger.log_media = lambda iteration, videos, sheets: logged.update(videos=videos, sheets=sheets)
    written = validation.write_samples([sample], tmp_path / "iter_000002", 2, logger)
    folder = tmp_path / "iter_000002" / "0_a_cat" / "0"
    assert sorted(p.name for p in folder.iterdir()) == ["000000.png", "input.png", "sample.json", "text.txt"]
    assert logged["videos"] == {} and set(logged["sheets"]) == {"sample_00", "input_00"}
    assert [p.name for p in written] == ["sample.json"]

"""Fixtures for the data tests: tiny generated clips (32x40, a few frames), good and bad.

Clips are encoded once per session; tests copy or point at them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cogvideox_sat.demo.clips import make_clip, make_sft_folder, write_mp4
from datatest_helpers import H, W, coded_frames


@pytest.fixture(scope="session")
def clip_store(tmp_path_factory) -> Path:
    """Clips encoded once per session (tests copy what they modify)."""
    root = tmp_path_factory.mktemp("clips")
    make_sft_folder(root / "sft", n_clips=4, num_frames=9, height=H, width=W, fps=8, seed=0, layout="both", with_images=True)
    write_mp4(root / "coded_40f_24fps.mp4", coded_frames(40), fps=24)
    write_mp4(root / "coded_5f.mp4", coded_frames(5), fps=8)
    return root


@pytest.fixture
def sft_folder(clip_store, tmp_path) -> Path:
    """A fresh copy of 4 good clips in both layouts (videos/, labels/, prompts.txt, videos.txt, images.txt)."""
    dst = tmp_path / "sft"
    shutil.copytree(clip_store / "sft", dst)
    return dst


@pytest.fixture
def coded_clip(clip_store) -> Callable[[str], Path]:
    return lambda name: clip_store / name


@pytest.fixture
def corrupt_corpus(clip_store, tmp_path) -> tuple[Path, dict[str, str]]:
    """An official-layout folder: 2 good clips and 8 bad ones (every reason a file can have).

    Returns (folder, {video file name: expected skip reason}).
    """
    root = tmp_path / "corpus"
    (root / "videos").mkdir(parents=True)
    (root / "labels").mkdir()
    good = sorted((clip_store / "sft" / "videos").glob("*.mp4"))
    data = good[0].read_bytes()
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {
        "a_good.mp4": data,
        "b_good.mp4": good[1].read_bytes(),
        "c_zero.mp4": b"",
        "d_truncated.mp4": data[: len(data) // 2],
        "e_random.mp4": rng.bytes(4000),
        "f_text.mp4": b"this is not a video\n" * 50,
        "g_short.mp4": (clip_store / "coded_5f.mp4").read_bytes(),
        "h_nocaption.mp4": data,
        "i_emptycaption.mp4": data,
        "j_damaged.mp4": data[: len(data) * 7 // 10] + bytes(len(data) - len(data) * 7 // 10),
    }
    for name, content in files.items():
        (root / "videos" / name).write_bytes(content)
        if name != "h_nocaption.mp4":
            caption = "" if name == "i_emptycaption.mp4" else f"caption of {name}\n"
            (root / "labels" / name.replace(".mp4", ".txt")).write_text(caption)
    expected = {
        "c_zero.mp4": "empty",
        "d_truncated.mp4": "corrupt",
        "e_random.mp4": "corrupt",
        "f_text.mp4": "corrupt",
        "g_short.mp4": "too_short",
        "h_nocaption.mp4": "captionless",
        "i_emptycaption.mp4": "captionless",
        "j_damaged.mp4": "undecodable",  # opens, but its frame data is zeroed
    }
    return root, expected


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, bytes]:
    """Two 17-frame clips (8 fps) and a 40-frame gray-coded one (24 fps), as bytes."""
    root = tmp_path_factory.mktemp("shard_clips")
    make_clip(root / "a.mp4", num_frames=17, height=32, width=40, fps=8, seed=1)
    make_clip(root / "b.mp4", num_frames=17, height=40, width=32, fps=8, seed=2)
    write_mp4(root / "coded.mp4", coded_frames(40), fps=24)
    return {name: (root / f"{name}.mp4").read_bytes() for name in ("a", "b", "coded")}

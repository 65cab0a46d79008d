"""Fine-tuning folder layouts: which videos, captions and (I2V) images a folder holds.

- official: `videos/**/*.mp4` with captions in `labels/**/<same stem>.txt` (first line);
- diffusers: `prompts.txt` + `videos.txt` (+ `images.txt`), one entry per line, aligned by
  line, paths relative to the folder (the layout of diffusers' CogVideoX fine-tuning scripts).

Still images (`still_images=True`, one-frame clips, see still.py): in the official layout every
png/jpg/jpeg/webp/bmp file under the folder, captioned like a video, with the last `images` (or
`videos`) folder of its path replaced by `labels` (`images/cat.png` -> `labels/cat.txt`); in the
diffusers layout the `videos.txt` lines that name such files. Off by default: an official folder
may hold first-frame images beside its clips (images/ of an I2V folder) that are not samples.

Entries are kept in numpy string arrays, not lists of Python objects: DataLoader workers
touching Python objects copy the pages they live on, numpy arrays stay shared.
Captions of the official layout are read when a sample is loaded, not all at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cogvideox_sat.data.still import IMAGE_SUFFIXES, is_image_path

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
LAYOUTS = ("auto", "official", "diffusers")


@dataclass(frozen=True)
class FolderIndex:
    """The entries of a fine-tuning folder (aligned arrays; None where a layout has none)."""

    layout: str
    videos: np.ndarray  # media paths: videos, and stills where `stills` says so
    labels: np.ndarray | None  # official: caption file per video
    captions: np.ndarray | None  # diffusers: caption per video
    images: np.ndarray | None  # diffusers with images.txt: first-frame image per video
    stills: np.ndarray | None = None  # bool per entry: a still image (None: no still indexed)

    def __len__(self) -> int:
        return len(self.videos)

    def select(self, keep: np.ndarray) -> FolderIndex:
        """The entries where `keep` (bool mask or indices) says so."""
        pick = (lambda a: None if a is None else a[keep])
        return FolderIndex(self.layout, self.videos[keep], pick(self.labels), pick(self.captions), pick(self.images), pick(self.stills))

    def is_still(self, i: int) -> bool:
        return self.stills is not None and bool(self.stills[i])


def label_path(video: str) -> str:
    """The official caption file of `video`: its last `videos` folder becomes `labels`, suffix .txt
    (of a still image: its last `images` or `videos` folder).

    The official code replaced every "videos" substring of the whole path (so a dataset under
    `/data/my_videos/` looked for `/data/my_labels/`); only the folder component is replaced here.
    """
    parts = list(Path(video).parts)
    folders = ("videos", "images") if is_image_path(video) else ("videos",)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in folders:
            parts[i] = "labels"
            break
    return str(Path(*parts).with_suffix(".txt"))


def index_folder(
    data_dir: str,
    layout: str = "auto",
    caption_column: str = "prompts.txt",
    video_column: str = "videos.txt",
    image_column: str | None = "images.txt",
    still_images: bool = False,
) -> FolderIndex:
    """Index `data_dir` in the given layout ("auto": diffusers if its two list files exist);
    with `still_images`, image files are entries too (`stills` marks them)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder '{data_dir}' does not exist")
    lists_exist = (root / caption_column).is_file() and (root / video_column).is_file()
    if layout == "diffusers" or (layout == "auto" and lists_exist):
        index = _index_diffusers(root, caption_column, video_column, image_column)
    else:
        index = _index_official(root, VIDEO_SUFFIXES + IMAGE_SUFFIXES if still_images else VIDEO_SUFFIXES)
    if not still_images:
        return index
    stills = np.array([is_image_path(p) for p in index.videos], dtype=bool)
    return FolderIndex(index.layout, index.videos, index.labels, index.captions, index.images, stills)


def _index_official(root: Path, suffixes: tuple[str, ...]) -> FolderIndex:
    videos = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # os.walk order is filesystem-dependent; sorted keeps runs reproducible
        videos += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(suffixes)]
    labels = [label_path(v) for v in videos]
    return FolderIndex("official", _strings(videos), _strings(labels), None, None)


def count_images(data_dir: str) -> int:
    """Image files under `data_dir` (for the hint of a folder with no video)."""
    return sum(1 for _, _, files in os.walk(data_dir) for f in files if is_image_path(f))


def _index_diffusers(root: Path, caption_column: str, video_column: str, image_column: str | None) -> FolderIndex:
    captions = _read_lines(root / caption_column)
    videos = [_resolve(root, p) for p in _read_lines(root / video_column)]
    while videos and videos[-1] == str(root):  # trailing blank lines
        videos.pop()
    if len(captions) < len(videos):
        raise ValueError(
            f"{root / caption_column} has {len(captions)} lines but {root / video_column} lists "
            f"{len(videos)} videos; the files must be aligned line by line"
        )
    captions = captions[: len(videos)]
    images = None
    if image_column and (root / image_column).is_file():
        images = [_resolve(root, p) for p in _read_lines(root / image_column)][: len(videos)]
        if len(images) != len(videos):
            raise ValueError(f"{root / image_column} lists {len(images)} images for {len(videos)} videos")
    return FolderIndex("diffusers", _strings(videos), None, _strings(captions), None if images is None else _strings(images))


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]


def _resolve(root: Path, rel: str) -> str:
    return str(root / rel.strip())


def _strings(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=np.str_) if values else np.zeros(0, dtype=np.str_)


def read_caption(label: str) -> str:
    """First line of an official caption file ('' when missing or empty)."""
    try:
        with open(label, encoding="utf-8", errors="replace") as f:
            return f.readline().strip()
    except OSError:
        return ""

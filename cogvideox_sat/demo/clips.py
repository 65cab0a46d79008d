"""Synthetic captioned video clips: moving shapes over drifting gradients, written as mp4.

Made offline with imageio + imageio-ffmpeg (libx264, yuv420p), deterministic per seed, so tests,
benchmarks and the demo get real decodable files without downloading anything. Every frame
differs (the shape moves, the gradient drifts), so frame-sampling bugs show up as wrong pixels.

Sizes: yuv420p needs even heights and widths. Some tiny widths (16, 24, 48, 72, ...) trip a
decord 0.6 bug (frames come back with 4 or 6 channels); use e.g. 32x40 for tiny test clips.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "purple": (160, 60, 200),
}
_SHAPES = ("square", "circle", "bar")
_MOTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0), "diagonally": (0.7, 0.7)}


@dataclass(frozen=True)
class ClipRecipe:
    """What a synthetic clip shows; `caption` describes it in words."""

    shape: str
    color: str
    motion: str
    background: str

    @property
    def caption(self) -> str:
        return f"A {self.color} {self.shape} moving {self.motion} across a {self.background} gradient background."


def recipe_for(seed: int) -> ClipRecipe:
    """A deterministic recipe for `seed` (different seeds give different clips and captions)."""
    rng = np.random.default_rng(seed)
    colors = list(_COLORS)
    color = colors[rng.integers(len(colors))]
    background = colors[(colors.index(color) + 1 + rng.integers(len(colors) - 1)) % len(colors)]
    return ClipRecipe(
        shape=_SHAPES[rng.integers(len(_SHAPES))],
        color=color,
        motion=list(_MOTIONS)[rng.integers(len(_MOTIONS))],
        background=background,
    )


def iter_frames(recipe: ClipRecipe, num_frames: int, height: int, width: int) -> Iterator[np.ndarray]:
    """uint8 (H, W, 3) frames of `recipe`, one at a time (long HD clips never sit in memory)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = np.array(_COLORS[recipe.background], np.float32)
    fg = np.array(_COLORS[recipe.color], np.float32)
    dx, dy = _MOTIONS[recipe.motion]
    size = max(4.0, 0.25 * min(height, width))
    for t in range(num_frames):
        phase = t / max(num_frames - 1, 1)
        # 1. a gradient that drifts with time
        ramp = 0.35 + 0.65 * ((xx / width + yy / height) / 2 + 0.5 * phase) % 1.0
        img = ramp[..., None] * bg
        # 2. a shape that crosses the frame along its motion direction
        cx = width / 2 + dx * (phase - 0.5) * (width - size)
        cy = height / 2 + dy * (phase - 0.5) * (height - size)
        if recipe.shape == "circle":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= (size / 2) ** 2
        elif recipe.shape == "bar":
            mask = (np.abs(xx - cx) <= size / 4) & (np.abs(yy - cy) <= size)
        else:
            mask = (np.abs(xx - cx) <= size / 2) & (np.abs(yy - cy) <= size / 2)
        img[mask] = fg
        yield np.clip(img, 0, 255).astype(np.uint8)


def render_frames(recipe: ClipRecipe, num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of `recipe`."""
    return np.stack(list(iter_frames(recipe, num_frames, height, width)))


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Encode uint8 (H, W, 3) frames (an array (T, H, W, 3) or any iterable of frames) as an
    H.264 mp4 with the moov atom first, so it streams."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(
        str(path),
        format="FFMPEG",
        fps=fps,
        codec="libx264",
        pixelformat="yuv420p",
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-movflags", "+faststart", "-crf", "18"],
    )
    try:
        for frame in frames:
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                raise ValueError(f"yuv420p needs even sizes, got {h}x{w}")
            writer.append_data(frame)
    finally:
        writer.close()
    return path


def make_clip(
    path: str | Path, num_frames: int = 9, height: int = 32, width: int = 40, fps: float = 8, seed: int = 0
) -> str:
    """Write one synthetic clip to `path`; returns its caption."""
    recipe = recipe_for(seed)
    write_mp4(path, iter_frames(recipe, num_frames, height, width), fps)
    return recipe.caption


def make_sft_folder(
    root: str | Path,
    n_clips: int = 12,
    num_frames: int = 9,
    height: int = 32,
    width: int = 40,
    fps: float = 8,
    seed: int = 0,
    layout: str = "official",
    with_images: bool = False,
) -> list[tuple[Path, str]]:
    """A fine-tuning folder of `n_clips` synthetic clips (recipes drawn from `seed`); returns
    [(video path, caption)]. See `write_sft_folder` for the layouts."""
    recipes = [recipe_for(seed + i) for i in range(n_clips)]
    return write_sft_folder(root, recipes, num_frames, height, width, fps, layout, with_images)


def write_sft_folder(
    root: str | Path,
    recipes: Sequence[ClipRecipe],
    num_frames: int = 9,
    height: int = 32,
    width: int = 40,
    fps: float = 8,
    layout: str = "official",
    with_images: bool = False,
) -> list[tuple[Path, str]]:
    """A fine-tuning folder with one clip per recipe; returns [(video path, caption)].

    layout "official": `videos/<stem>.mp4` + `labels/<stem>.txt` (the official SFT layout);
    "diffusers": `prompts.txt` + `videos.txt` (paths relative to root, aligned by line), and
    with `with_images` an `images.txt` listing each clip's first frame as a png; "both": both.
    """
    if layout not in ("official", "diffusers", "both"):
        raise ValueError(f"layout must be 'official', 'diffusers' or 'both', got {layout!r}")
    root = Path(root)
    made = []
    for i, recipe in enumerate(recipes):
        stem = f"clip_{i:04d}"
        frames = render_frames(recipe, num_frames, height, width)
        video = write_mp4(root / "videos" / f"{stem}.mp4", frames, fps)
        if layout in ("official", "both"):
            label = root / "labels" / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(recipe.caption + "\n")
        if with_images:
            import imageio.v2 as imageio

            (root / "images").mkdir(parents=True, exist_ok=True)
            imageio.imwrite(root / "images" / f"{stem}.png", frames[0])
        made.append((video, recipe.caption))
    if layout in ("diffusers", "both"):
        (root / "prompts.txt").write_text("".join(c + "\n" for _, c in made))
        (root / "videos.txt").write_text("".join(f"videos/{v.name}\n" for v, _ in made))
        if with_images:
            (root / "images.txt").write_text("".join(f"images/{v.stem}.png\n" for v, _ in made))
    return made

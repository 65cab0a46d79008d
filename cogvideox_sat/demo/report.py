"""The demo's learning report: did each stage move the model toward its clips?

Reads the two runs' metrics.jsonl (loss curves), the training clips (official SFT folders) and
the sampled videos (sample_video.py's `<i>_<prompt>/<n>/000000.mp4` + `text.txt`), then for each
sample finds the nearest training clip by pixel mean-squared error over all frames. A stage has
learned when every one of its captions samples nearest its own clip; the LoRA stage has also
learned something new when the base alone does not. `write_report` prints the verdict and saves
a PNG (loss curves, clip | base sample | base+LoRA sample per prompt, nearest clip and
distances) plus the same numbers as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cogvideox_sat.training.metrics import losses_by_iteration, read_metrics


@dataclass(frozen=True)
class Clip:
    name: str  # "<folder>/<stem>"
    caption: str
    frames: np.ndarray  # uint8 (T, H, W, 3)


@dataclass(frozen=True)
class LossSummary:
    iterations: list[int]
    smoothed: list[float]
    first: float  # mean loss of the first window of logged steps
    last: float  # mean loss of the last window

    @property
    def ratio(self) -> float:
        return self.first / max(self.last, 1e-12)


@dataclass
class SampleMatch:
    prompt: str
    own: str  # the clip this prompt's caption belongs to
    nearest: str
    distance: float  # MSE (pixels in [0, 1]) to the nearest clip
    own_distance: float
    frames: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def matched(self) -> bool:
        return self.nearest == self.own


def read_video(path: str | Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def read_clips(folder: str | Path) -> list[Clip]:
    """The clips of an official SFT folder (videos/NAME.mp4 + labels/NAME.txt), sorted by name."""
    folder = Path(folder)
    clips = []
    for video in sorted((folder / "videos").glob("*.mp4")):
        caption = (folder / "labels" / f"{video.stem}.txt").read_text(encoding="utf-8").strip()
        clips.append(Clip(f"{folder.name}/{video.stem}", caption, read_video(video)))
    return clips


def read_samples(folder: str | Path) -> dict[str, np.ndarray]:
    """prompt -> frames of the first sample of each prompt folder that sample_video.py wrote."""
    out = {}
    for text in sorted(Path(folder).glob("*/*/text.txt")):
        out.setdefault(text.read_text(encoding="utf-8").strip(), read_video(text.parent / "000000.mp4"))
    return out


def loss_summary(run_dir: str | Path, window_fraction: float = 0.1) -> LossSummary:
    """Loss per logged iteration, smoothed with a moving average of `window_fraction` of the
    points; first/last = the means of the first and last such windows."""
    losses = losses_by_iteration(read_metrics(run_dir))
    its = sorted(losses)
    values = np.array([losses[i] for i in its], dtype=np.float64)
    if len(values) == 0:
        raise ValueError(f"{run_dir}: metrics.jsonl logs no loss")
    w = max(1, int(round(len(values) * window_fraction)))
    smooth = np.convolve(values, np.ones(w) / w, mode="valid")
    return LossSummary(its[w - 1 :], smooth.tolist(), float(values[:w].mean()), float(values[-w:].mean()))


def mse(a: np.ndarray, b: np.ndarray) -> float:
    t = min(len(a), len(b))
    return float(np.mean((a[:t].astype(np.float64) / 255.0 - b[:t].astype(np.float64) / 255.0) ** 2))


def match(prompt: str, frames: np.ndarray, clips: list[Clip]) -> SampleMatch:
    """Where a sample lands among the training clips."""
    by_caption = {c.caption: c for c in clips}
    if prompt not in by_caption:
        raise ValueError(f"sampled prompt {prompt!r} is no training caption (known: {sorted(by_caption)})")
    distances = {c.name: mse(frames, c.frames) for c in clips}
    nearest = min(distances, key=distances.get)
    own = by_caption[prompt].name
    return SampleMatch(prompt, own, nearest, distances[nearest], distances[own], frames)


@dataclass
class DemoReport:
    base_loss: LossSummary
    lora_loss: LossSummary
    base_alone: list[SampleMatch]  # every caption (base stage's first), sampled with the base weights
    with_lora: list[SampleMatch]  # the same captions, base + LoRA
    n_base: int  # how many captions belong to the base stage
    times: dict[str, float]

    def checks(self) -> dict[str, tuple[int, int]]:
        """(passed, total) of each claim the demo makes."""
        base, lora_with, lora_without = self.base_alone[: self.n_base], self.with_lora[self.n_base :], self.base_alone[self.n_base :]
        return {
            "base captions nearest their own clip (base alone)": (sum(m.matched for m in base), len(base)),
            "LoRA captions nearest their own clip (base + LoRA)": (sum(m.matched for m in lora_with), len(lora_with)),
            "LoRA captions NOT nearest their own clip (base alone)": (sum(not m.matched for m in lora_without), len(lora_without)),
        }

    @property
    def learned(self) -> bool:
        return all(p == n for p, n in self.checks().values()) and self.base_loss.ratio > 1 and self.lora_loss.ratio > 1

    def verdict(self) -> str:
        c = list(self.checks().values())
        head = "LEARNED" if self.learned else "NOT LEARNED"
        return (
            f"{head}: base stage {c[0][0]}/{c[0][1]} captions sample nearest their own clip; LoRA stage "
            f"{c[1][0]}/{c[1][1]} with the adapters, {c[1][1] - c[2][0]}/{c[2][1]} without; smoothed loss fell "
            f"{self.base_loss.ratio:.1f}x (base) and {self.lora_loss.ratio:.1f}x (LoRA)"
        )

    def to_json(self) -> dict:
        def rows(ms: list[SampleMatch]) -> list[dict]:
            return [{k: v for k, v in asdict(m).items() if k != "frames"} | {"matched": m.matched} for m in ms]

        def loss(s: LossSummary) -> dict:
            return {"first_window": s.first, "last_window": s.last, "ratio": s.ratio}

        return {
            "learned": self.learned, "verdict": self.verdict(), "checks": self.checks(), "times_s": self.times,
            "base_loss": loss(self.base_loss), "lora_loss": loss(self.lora_loss),
            "base_alone": rows(self.base_alone), "with_lora": rows(self.with_lora), "n_base": self.n_base,
        }


def build_report(
    base_run: Path, lora_run: Path, base_data: Path, lora_data: Path, with_lora: Path, base_only: Path, times: dict[str, float]
) -> DemoReport:
    base_clips, lora_clips = read_clips(base_data), read_clips(lora_data)
    clips = base_clips + lora_clips

    def matches(where: Path) -> list[SampleMatch]:
        samples = read_samples(where)
        missing = [c.caption for c in clips if c.caption not in samples]
        if missing:
            raise FileNotFoundError(f"{where}: no sample of {missing}")
        return [match(c.caption, samples[c.caption], clips) for c in clips]

    return DemoReport(loss_summary(base_run), loss_summary(lora_run), matches(base_only), matches(with_lora), len(base_clips), times)


# ---- picture -------------------------------------------------------------------------------------
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _strip(frames: np.ndarray, n: int = 3, scale: int = 1) -> Image.Image:
    """n frames spread over the clip, side by side."""
    picks = np.linspace(0, len(frames) - 1, n).round().astype(int)
    row = np.concatenate([frames[i] for i in picks], axis=1)
    img = Image.fromarray(row)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def _curve(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], s: LossSummary, title: str, font) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(90, 90, 90))
    draw.text((x0 + 6, y0 + 4), f"{title}: smoothed loss {s.first:.3f} -> {s.last:.3f} ({s.ratio:.1f}x lower)", fill=(0, 0, 0), font=font)
    if len(s.smoothed) < 2:
        return
    lo, hi = min(s.smoothed), max(s.smoothed)
    its = s.iterations
    pts = [
        (x0 + 8 + (x1 - x0 - 16) * (i - its[0]) / max(its[-1] - its[0], 1), y1 - 8 - (y1 - y0 - 34) * (v - lo) / max(hi - lo, 1e-12))
        for i, v in zip(its, s.smoothed)
    ]
    draw.line(pts, fill=(200, 40, 40), width=2)
    draw.text((x0 + 6, y1 - 20), f"it {its[0]}", fill=(80, 80, 80), font=font)
    draw.text((x1 - 60, y1 - 20), f"it {its[-1]}", fill=(80, 80, 80), font=font)


def render_png(report: DemoReport, clips: dict[str, Clip], path: Path, scale: int = 1) -> Path:
    font, small = _font(14), _font(12)
    rows = [("base" if i < report.n_base else "LoRA", alone, both) for i, (alone, both) in enumerate(zip(report.base_alone, report.with_lora))]
    tile = _strip(next(iter(clips.values())).frames, scale=scale)
    col_w, row_h = tile.width + 16, tile.height + 44
    width = 3 * col_w + 20
    height = 200 + 30 + row_h * len(rows) + 60
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    half = (width - 30) // 2
    _curve(draw, (10, 10, 10 + half, 190), report.base_loss, "base stage", small)
    _curve(draw, (20 + half, 10, width - 10, 190), report.lora_loss, "LoRA stage", small)
    y = 200
    for i, name in enumerate(("training clip", "sample: base alone", "sample: base + LoRA")):
        draw.text((10 + i * col_w, y + 6), name, fill=(0, 0, 0), font=font)
    y += 30
    for stage, alone, both in rows:
        draw.text((10, y), f"[{stage} caption] {alone.prompt}", fill=(0, 0, 0), font=small)
        img.paste(_strip(clips[alone.own].frames, scale=scale), (10, y + 18))
        for col, m in ((1, alone), (2, both)):
            # green where the sample lands where the demo claims: its own clip, except a LoRA
            # caption sampled without the adapters, which must land elsewhere
            good = m.matched != (stage == "LoRA" and m is alone)
            img.paste(_strip(m.frames, scale=scale), (10 + col * col_w, y + 18))
            draw.text((10 + col * col_w, y + 20 + tile.height), f"nearest {m.nearest}  mse {m.distance:.4f}",
                      fill=(0, 130, 0) if good else (200, 0, 0), font=small)
        y += row_h
    draw.text((10, y + 6), report.verdict(), fill=(0, 0, 0), font=small)
    if report.times:
        draw.text((10, y + 26), "stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in report.times.items()), fill=(60, 60, 60), font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_report(
    base_run: Path, lora_run: Path, base_data: Path, lora_data: Path, with_lora: Path, base_only: Path,
    out_png: Path, times: Optional[dict[str, float]] = None,
) -> DemoReport:
    """Build the report, print it, save `out_png` and `out_png.with_suffix('.json')`."""
    report = build_report(base_run, lora_run, base_data, lora_data, with_lora, base_only, times or {})
    clips = {c.name: c for c in read_clips(base_data) + read_clips(lora_data)}
    for title, s in (("base", report.base_loss), ("LoRA", report.lora_loss)):
        print(f"{title} stage loss (smoothed): first window {s.first:.4f} -> last window {s.last:.4f} ({s.ratio:.1f}x lower)")
    for i, (alone, both) in enumerate(zip(report.base_alone, report.with_lora)):
        stage = "base" if i < report.n_base else "LoRA"
        print(f"  [{stage} caption] {alone.prompt}")
        print(f"      base alone: nearest {alone.nearest} (mse {alone.distance:.4f}; own clip {alone.own_distance:.4f})")
        print(f"      base + LoRA: nearest {both.nearest} (mse {both.distance:.4f}; own clip {both.own_distance:.4f})")
    for claim, (passed, total) in report.checks().items():
        print(f"  {claim}: {passed}/{total}")
    if report.times:
        print("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in report.times.items()))
    render_png(report, clips, out_png, scale=2)
    out_png.with_suffix(".json").write_text(json.dumps(report.to_json(), indent=1))
    print(report.verdict())
    print(f"learning report: {out_png}")
    return report

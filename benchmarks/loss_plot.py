"""Loss curves of several runs overlaid in one PNG (PIL only: no plotting library is a dependency).

Each run is drawn twice in its colour: the per-step losses faint, their trailing moving average
bold, so runs that learn the same sit on one line while the step-to-step noise stays visible. The
legend gives each run's mean loss over its last `tail` steps and the ratio to the first run's.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (shorter at the start), same length as `values`."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def tail_means(curves: dict[str, list[float]], tail: int) -> dict[str, float]:
    return {name: statistics.fmean(losses[-tail:]) for name, losses in curves.items()}


def plot_losses(curves: dict[str, list[float]], path: Path, title: str, window: int = 20, tail: int = 50,
                size: tuple[int, int] = (1000, 560)) -> Path:
    """Write the overlay of `curves` (name -> per-step losses, step 1 first) to `path`."""
    if not curves or not all(curves.values()):
        raise ValueError("plot_losses needs at least one run with at least one loss")
    width, height = size
    left, right, top, bottom = 70, 20, 40, 50 + 18 * len(curves)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    steps = max(len(v) for v in curves.values())
    values = [v for losses in curves.values() for v in losses]
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1.0

    def xy(step: int, loss: float) -> tuple[float, float]:
        x = left + (width - left - right) * (step - 1) / max(steps - 1, 1)
        y = top + (height - top - bottom) * (hi - loss) / (hi - lo)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    draw.text((left, 10), title, fill=(0, 0, 0), font=font)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        loss = hi - frac * (hi - lo)
        _, y = xy(1, loss)
        draw.text((8, y - 6), f"{loss:.3f}", fill=(0, 0, 0), font=font)
    for step in sorted({1, steps, *range(0, steps + 1, max(steps // 5, 1))} - {0}):
        x, _ = xy(step, lo)
        draw.text((x - 8, height - bottom + 4), str(step), fill=(0, 0, 0), font=font)
    means = tail_means(curves, tail)
    first = next(iter(means.values()))
    for i, (name, losses) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        faint = tuple(int(c + (255 - c) * 0.7) for c in colour)
        points = [xy(s + 1, v) for s, v in enumerate(losses)]
        if len(points) > 1:
            draw.line(points, fill=faint, width=1)
            draw.line([xy(s + 1, v) for s, v in enumerate(moving_average(losses, window))], fill=colour, width=3)
        n = min(tail, len(losses))
        label = f"{name}: mean of last {n} steps {means[name]:.4f} ({means[name] / first:.4f}x of {next(iter(curves))})"
        y = height - bottom + 22 + 18 * i
        draw.line([(left, y + 6), (left + 30, y + 6)], fill=colour, width=3)
        draw.text((left + 38, y), label, fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path

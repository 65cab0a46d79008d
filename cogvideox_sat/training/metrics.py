"""Training metrics: `metrics.jsonl` in the run folder, TensorBoard, and wandb when enabled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional


METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records MetricsLogger wrote to `run_dir`, in order."""
    return [json.loads(line) for line in (Path(run_dir) / METRICS_FILE).read_text().splitlines()]


def losses_by_iteration(records: list[dict[str, Any]]) -> dict[int, float]:
    """The last logged loss per iteration (a resumed run logs again the steps after its checkpoint)."""
    return {r["iteration"]: r["loss"] for r in records if "loss" in r}


class MetricsLogger:
    """Rank 0 writes; other ranks hold a logger that does nothing."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, use_wandb: bool = False, wandb_project: str = "cogvideox-sat", config: Optional[dict[str, Any]] = None):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / METRICS_FILE, "a", buffering=1)
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        except ImportError:
            self._tb = None
        if use_wandb:
            import wandb  # optional: WANDB_MODE=offline works without a network

            self._wandb = wandb.init(project=wandb_project, dir=str(self.run_dir), config=config or {}, name=self.run_dir.name)

    def log(self, iteration: int, values: dict[str, float], skipped: Optional[dict[str, int]] = None) -> None:
        """One record; `skipped`: running counts of skipped inputs by reason (bad files, NaN losses)."""
        if not self.enabled:
            return
        extra = {"skipped": skipped} if skipped else {}
        self._jsonl.write(json.dumps({"iteration": iteration, **values, **extra}) + "\n")
        for key, value in values.items():
            if self._tb is not None:
                self._tb.add_scalar(f"train/{key}", value, iteration)
        for reason, count in (skipped or {}).items():
            if self._tb is not None:
                self._tb.add_scalar(f"skipped/{reason}", count, iteration)
        if self._wandb is not None:
            self._wandb.log({f"train/{k}": v for k, v in values.items()} | {f"skipped/{k}": v for k, v in (skipped or {}).items()}, step=iteration)

    def log_media(self, iteration: int, videos: dict[str, str], images: dict[str, str]) -> None:
        """Validation samples: mp4 paths and contact-sheet PNG paths, by name (listed in metrics.jsonl too)."""
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"iteration": iteration, "val_videos": videos}) + "\n")
        if self._tb is not None:
            import imageio.v3 as iio

            for name, path in images.items():
                self._tb.add_image(f"val/{name}", iio.imread(path), iteration, dataformats="HWC")
        if self._wandb is not None:
            import wandb

            media = {f"val/{n}": wandb.Video(p, format="mp4") for n, p in videos.items()}
            media.update({f"val/{n}_sheet": wandb.Image(p) for n, p in images.items()})
            self._wandb.log(media, step=iteration)

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

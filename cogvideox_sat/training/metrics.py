"""Training metrics: `metrics.jsonl` in the run folder, TensorBoard, and wandb when enabled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional


METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records MetricsLogger wrote to `run_dir`, in order. A last line without its newline is
    a record cut off by a kill (or being written now) and is left out; any other bad line is an
    error naming the file and line."""
    path = Path(run_dir) / METRICS_FILE
    text = path.read_text()
    lines = text.split("\n")[:-1]  # whole lines only: the piece after the last newline is torn or empty
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not a JSON record ({err.msg}); the file was edited or written by two runs at once") from None
    return records


def _drop_torn_record(path: Path) -> None:
    """Cut a record that a kill left half-written at the end of `path`, so the next record starts on a line of its own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def step_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One training-step record per iteration, in iteration order: a resumed run logs again the
    steps between its checkpoint and the stop, and the later record of a step is the one that lasted."""
    by_iteration = {r["iteration"]: r for r in records if "loss" in r}
    return [by_iteration[i] for i in sorted(by_iteration)]


def losses_by_iteration(records: list[dict[str, Any]]) -> dict[int, float]:
    """The last logged loss per iteration (see `step_records`)."""
    return {r["iteration"]: r["loss"] for r in step_records(records)}


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
        _drop_torn_record(self.run_dir / METRICS_FILE)  # a resumed run appends after a killed one's records
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

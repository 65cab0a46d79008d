"""Shared kit for tests that run train_video.py as real processes on the CPU demo model."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import yaml

from cogvideox_sat.training.metrics import losses_by_iteration, read_metrics
from tests.conftest import REPO

# SAT's FusedEmaAdam as the official sft.yaml names it (torch's Adam on CPU); add params.ema_decay
EMA_OPTIMIZER = {"type": "sat.ops.FusedEmaAdam", "params": {"lr": 0.001, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-4, "torch_adam": True}}


def make_demo_assets(root: Path) -> Path:
    """A tiny T5 (`root/t5`) and six 9x64x96 clips (`root/data`)."""
    from cogvideox_sat.demo.clips import make_sft_folder
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    make_tiny_t5(root / "t5", d_model=32)
    make_sft_folder(root / "data", n_clips=6, num_frames=9, height=64, width=96, fps=8)
    return root


def random_base_run(folder: Path, model: str = "tiny_t2v.yaml", seed: int = 0) -> Path:
    """A run folder (`latest` + `1/mp_rank_00_model_states.pt`) holding the freshly initialized DiT
    of configs/demo/`model`: a base for `--load`, without a training launch (~15 s each on CPU)."""
    import torch

    from cogvideox_sat.config import load_configs
    from cogvideox_sat.registry import instantiate_from_config

    torch.manual_seed(seed)
    dit = instantiate_from_config(load_configs([REPO / "configs/demo" / model]).section("model")["network_config"])
    return save_dit_run(folder, dit.state_dict())


def save_dit_run(folder: Path, state: dict) -> Path:
    """DiT tensors as a run folder of ours (`latest` + `1/mp_rank_00_model_states.pt`)."""
    import torch

    (folder / "1").mkdir(parents=True)
    torch.save({"module": {f"model.diffusion_model.{k}": v for k, v in state.items()}}, folder / "1" / "mp_rank_00_model_states.pt")
    (folder / "latest").write_text("1")
    return folder


def make_still_folder(root: Path, n: int = 4, height: int = 64, width: int = 96, seed: int = 100, ext: str = "png") -> list[tuple[Path, str]]:
    """An official-layout folder of `n` still images (`images/<stem>.<ext>` + `labels/<stem>.txt`),
    each the first frame of a demo clip recipe (seeds `seed`, `seed + 1`, ...); returns [(image, caption)]."""
    import imageio.v2 as imageio

    from cogvideox_sat.demo.clips import recipe_for, render_frames

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        recipe = recipe_for(seed + i)
        image = root / "images" / f"still_{i:04d}.{ext}"
        imageio.imwrite(image, render_frames(recipe, 1, height, width)[0])
        (root / "labels" / f"still_{i:04d}.txt").write_text(f"A still photo: {recipe.caption}\n")
        made.append((image, f"A still photo: {recipe.caption}"))
    return made


def demo_overlay(assets: Path, save: Path, **args) -> dict:
    """The run overlay on configs/demo: the assets' T5 and data, no validation, a loss per step;
    `args` (train_iters, save_interval, ...) go into its `args:` section."""
    t5 = {"is_trainable": False, "input_key": "txt", "ucg_rate": 0.1, "target": "cogvideox_sat.conditioner.FrozenT5Embedder",
          "params": {"model_dir": str(assets / "t5"), "max_length": 16}}
    return {
        "model": {"conditioner_config": {"params": {"emb_models": [t5]}}},
        "args": {"train_data": [str(assets / "data")], "valid_data": None, "eval_interval": None, "save": str(save),
                 "log_interval": 1, "num_workers": 0, **args},
    }


def train_command(tmp: Path, model: str, extra: dict, *flags: str, processes: int = 1) -> tuple[list[str], dict[str, str]]:
    """Command and environment of train_video.py on configs/demo/<model> + sft_tiny.yaml + `extra`
    (written to a fresh overlay file in `tmp`); torchrun for several processes."""
    cfg = tmp / f"overlay-{time.monotonic_ns()}.yaml"
    cfg.write_text(yaml.safe_dump(extra))
    script = [str(REPO / "train_video.py"), "--base", str(REPO / "configs/demo" / model), str(REPO / "configs/demo/sft_tiny.yaml"), str(cfg), *flags]
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else [sys.executable]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return [*runner, *script], env


def run_dir_of(save: Path) -> Path:
    (run,) = [p for p in save.iterdir() if p.is_dir()]
    return run


def losses(run: Path) -> dict[int, float]:
    """Last logged loss per iteration (a resumed run logs again the steps after its checkpoint)."""
    return losses_by_iteration(read_metrics(run))

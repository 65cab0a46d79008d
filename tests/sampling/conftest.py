"""Fixtures for the sampling tests: a tiny T5, SAT-layout checkpoints of the tiny demo models
(T2V, T2V LoRA-only adapters, I2V), test images, and a helper that parses real sample args.

Sampling is shrunk to 3 latent frames at 64x96 and 2 sampler steps through an overlay YAML.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from cogvideox_sat.cli import parse_run

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo"
STEPS = 2
LATENT = (3, 4, 8, 12)  # (t, c, h, w) of 9 frames at 64x96
FRAMES, HEIGHT, WIDTH = 9, 64, 96
DIT = "model.diffusion_model."


def overlay_dict(t5_dir: Path, steps: int = STEPS) -> dict:
    t5 = {
        "is_trainable": False,
        "input_key": "txt",
        "ucg_rate": 0.1,
        "target": "cogvideox_sat.conditioner.FrozenT5Embedder",
        "params": {"model_dir": str(t5_dir), "max_length": 16},
    }
    return {
        "model": {
            "conditioner_config": {"params": {"emb_models": [t5]}},
            "sampler_config": {"params": {"num_steps": steps, "verbose": False, "guider_config": {"params": {"num_steps": steps}}}},
        }
    }


def build_engine(model: str, t5_dir: Path, seed: int = 0):
    from cogvideox_sat.engine import SATVideoDiffusionEngine

    cfg = OmegaConf.merge(OmegaConf.load(DEMO / f"{model}.yaml"), OmegaConf.create(overlay_dict(t5_dir))).model
    torch.manual_seed(seed)
    return SATVideoDiffusionEngine(argparse.Namespace(model_config=cfg, fp16=False, bf16=False, device="cpu"))


def save_sat(folder: Path, module_state: dict, tag: str = "1") -> Path:
    """SAT layout: `latest` + `<tag>/mp_rank_00_model_states.pt` holding {"module": ...}."""
    (folder / tag).mkdir(parents=True, exist_ok=True)
    (folder / "latest").write_text(tag)
    torch.save({"module": module_state}, folder / tag / "mp_rank_00_model_states.pt")
    return folder


def write_image(path: Path, height: int, width: int, rgb: Sequence[int]) -> Path:
    from PIL import Image

    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:] = np.asarray(rgb, dtype=np.uint8)
    pixels[:, : width // 8] = 255 - pixels[:, : width // 8]  # a stripe: not a flat colour
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("sampling_assets")
    t5 = make_tiny_t5(root / "t5", d_model=32)
    OmegaConf.save(OmegaConf.create(overlay_dict(t5)), root / "overlay.yaml")

    # base models: a released-style checkpoint holds the whole engine (VAE/T5 keys get ignored)
    t2v = build_engine("tiny_t2v", t5)
    save_sat(root / "t2v", t2v.state_dict())
    i2v = build_engine("tiny_i2v", t5, seed=1)
    save_sat(root / "i2v", {DIT + k: v for k, v in i2v.model.diffusion_model.state_dict().items()})

    # a LoRA-only checkpoint as our trainer writes it: adapters (non-zero B) + the position table
    lora = build_engine("tiny_t2v_lora", t5).model.diffusion_model
    generator = torch.Generator().manual_seed(7)
    lora_state = {}
    for key, value in lora.state_dict().items():
        if ".matrix_B." in key:
            value = torch.randn(value.shape, generator=generator) * 0.5
        if ".matrix_" in key or key.endswith("pos_embedding"):
            lora_state[DIT + key] = value
    save_sat(root / "lora", lora_state)
    (root / "lora" / "training_config.yaml").write_text(yaml.safe_dump({"args": {"load": str(root / "t2v")}}))

    red = write_image(root / "red.png", 64, 96, (220, 30, 30))
    blue = write_image(root / "blue.png", 64, 96, (30, 30, 220))
    wide = write_image(root / "wide.png", 40, 170, (30, 200, 30))
    return {"root": root, "t5": t5, "overlay": root / "overlay.yaml", "t2v": root / "t2v", "i2v": root / "i2v",
            "lora": root / "lora", "red": red, "blue": blue, "wide": wide}


@pytest.fixture
def make_args(assets: dict[str, Path], tmp_path: Path) -> Callable[..., argparse.Namespace]:
    """make_args(model, lines, *flags, load=None, configs=(), overlay=True, **attrs): parsed sample
    args for configs/demo/<model>.yaml (or a model YAML path) + inference_tiny.yaml + the tiny
    overlay (+ `configs`), with `lines` as the prompt file; `attrs` are set on the namespace
    afterwards (for keys the argument schema does not have yet)."""
    counter = iter(range(1000))

    def make(
        model: str | Path,
        lines: Sequence[str] = ("a red square slides right",),
        *flags: str,
        load: Path | None = None,
        configs: Sequence[Path] = (),
        overlay: bool = True,
        **attrs,
    ):
        n = next(counter)
        prompts = tmp_path / f"prompts{n}.txt"
        prompts.write_text("".join(f"{line}\n" for line in lines))
        default_load = assets["i2v"] if "i2v" in str(model) else assets["t2v"]
        argv = [
            "--base", str(model if isinstance(model, Path) else DEMO / f"{model}.yaml"), str(DEMO / "inference_tiny.yaml"),
            *([str(assets["overlay"])] if overlay else []), *map(str, configs),
            "--load", str(load or default_load), "--input-file", str(prompts), "--output-dir", str(tmp_path / f"out{n}"),
            "--device", "cpu", *flags,
        ]
        args = parse_run("sample", argv)
        for key, value in attrs.items():
            setattr(args, key, value)
        return args

    return make

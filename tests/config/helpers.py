"""Builders of small valid runs (the tiny demo model) that single tests then break on purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from cogvideox_sat.config import ValidatedRun, validate_run
from tests.conftest import REPO

DEMO = REPO / "configs" / "demo"


def write_yaml(path: Path, data: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def demo_train_files(tmp_path: Path, model: str = "tiny_t2v.yaml") -> list[str]:
    """The demo model + sft configs with every path pointing at existing tmp folders."""
    t5 = tmp_path / "t5"
    data = tmp_path / "data"
    t5.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    paths = write_yaml(
        tmp_path / "paths.yaml",
        {
            "model": {"conditioner_config": {"params": {"emb_models": [_t5_block(str(t5))]}}},
            "args": {"train_data": [str(data)], "valid_data": [str(data)], "save": str(tmp_path / "run")},
        },
    )
    return [str(DEMO / model), str(DEMO / "sft_tiny.yaml"), paths]


def demo_sample_files(tmp_path: Path, model: str = "tiny_t2v.yaml") -> list[str]:
    t5 = tmp_path / "t5"
    t5.mkdir(exist_ok=True)
    ckpt = make_checkpoint_dir(tmp_path / "ckpt")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a prompt\n")
    paths = write_yaml(
        tmp_path / "paths.yaml",
        {
            "model": {"conditioner_config": {"params": {"emb_models": [_t5_block(str(t5))]}}},
            "args": {"load": str(ckpt), "input_file": str(prompts)},
        },
    )
    return [str(DEMO / model), str(DEMO / "inference_tiny.yaml"), paths]


def make_checkpoint_dir(folder: Path, tag: str = "1") -> Path:
    (folder / tag).mkdir(parents=True, exist_ok=True)
    (folder / "latest").write_text(tag)
    (folder / tag / "mp_rank_00_model_states.pt").write_bytes(b"")
    return folder


def _t5_block(model_dir: str) -> dict[str, Any]:
    return {
        "is_trainable": False,
        "input_key": "txt",
        "ucg_rate": 0.1,
        "target": "cogvideox_sat.conditioner.FrozenT5Embedder",
        "params": {"model_dir": model_dir, "max_length": 16},
    }


def run_with(
    tmp_path: Path,
    overlay: Optional[dict[str, Any]] = None,
    kind: str = "train",
    model: str = "tiny_t2v.yaml",
    cli: Optional[dict[str, Any]] = None,
) -> ValidatedRun:
    files = demo_train_files(tmp_path, model) if kind == "train" else demo_sample_files(tmp_path, model)
    if overlay:
        files.append(write_yaml(tmp_path / "overlay.yaml", overlay))
    return validate_run(files, kind, cli)


def messages(run: ValidatedRun, key: Optional[str] = None) -> list[str]:
    return [p.render() for p in run.problems if key is None or p.key == key]

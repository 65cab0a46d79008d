"""What made a validation sample (`sample.json` beside its video) and the sample_video.py flags
that draw it again.

Validation during training and sample_video.py share the conditioning, seeding, sampling and
decoding code (`generate.py`, `decoding.py`), so the same weights, prompt, seed and settings
give the same video, bit for bit on the CPU. The record names all of them:

    python sample_video.py --from-validation <run>/samples/iter_000100/0_<prompt>/0

builds the flags from it: the run's training_config.yaml as config, the iteration's checkpoint
(`--load <run>/<n>`, or for a LoRA run `--load <base> --lora-load <run>/<n>`), the prompt as
sampled (ID token included), seed, image size, latent frames, fps, precision and decoding.
Flags given after it override them (e.g. `--device cuda:1`, `--output-dir`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from ..dtypes import dtype_name
from ..io.run_folder import TRAINING_CONFIG

RECORD_FILE = "sample.json"
IMAGE_FILE = "image.png"  # image-to-video: the first frame the sample was conditioned on
REPRODUCED = "reproduced"  # default output folder of --from-validation, inside the sample's folder
FLAG = "--from-validation"


class ReproduceError(ValueError):
    """A validation sample that cannot be drawn again (no record, checkpoint not saved, ...)."""


def sampler_settings(model_config: Any) -> dict[str, Any]:
    """Sampler, steps and guidance of the `model:` section (what validation sampled with)."""
    sampler = OmegaConf.to_container(OmegaConf.create(model_config), resolve=True).get("sampler_config") or {}
    params = sampler.get("params") or {}
    guider = params.get("guider_config") or {}
    return {
        "sampler": sampler.get("target"),
        "steps": params.get("num_steps"),
        "guider": guider.get("target"),
        "guidance": guider.get("params") or {},
    }


def lora_settings(model_config: Any) -> Optional[dict[str, Any]]:
    """r, lora_alpha and the scale lora_alpha / r applied to B A (None without LoRA)."""
    from cogvideox_sat.io.lora_state import lora_params, lora_scale

    network = OmegaConf.to_container(OmegaConf.create(model_config), resolve=True).get("network_config") or {}
    params = lora_params(network)
    return None if params is None else lora_scale(params)


def checkpoint_settings(args: argparse.Namespace, run_dir: Path, iteration: int, lora: bool) -> dict[str, Optional[str]]:
    """The weights validation sampled with, as sample_video.py loads them: the checkpoint of this
    iteration (saved by the loop right after validation when save_interval divides it); a LoRA
    run's checkpoint holds only adapters, so the base it trained from comes first."""
    checkpoint = str((run_dir / str(iteration)).resolve())
    if not lora:
        return {"load": checkpoint, "lora_load": None}
    base = args.load or (checkpoint if args.save_frozen_weights else None)
    return {"load": str(Path(base).resolve()) if base else None, "lora_load": checkpoint}


def validation_record(
    engine: Any,
    args: argparse.Namespace,
    run_dir: Path,
    iteration: int,
    *,
    prompt: str,
    caption: str,
    seed: int,
    image_size: Sequence[int],
    latent_frames: int,
    frames: int,
    fps: int,
    image: bool,
) -> dict[str, Any]:
    """Everything that made one validation sample (JSON-ready)."""
    lora = lora_settings(args.model_config)
    return {
        "iteration": iteration,
        "run": str(run_dir.resolve()),
        "prompt": prompt,
        "caption": caption,
        "id_token": args.id_token,
        "seed": seed,
        **sampler_settings(args.model_config),
        "lora": lora,
        "sampling_image_size": [int(v) for v in image_size],
        "sampling_num_frames": latent_frames,
        "frames": frames,
        "fps": fps,
        "image": IMAGE_FILE if image else None,
        "precision": dtype_name(engine.dtype),
        "official_decode": bool(getattr(args, "official_decode", False)),
        "decode_chunk_frames": getattr(args, "decode_chunk_frames", None),
        "only_latents": bool(args.only_log_video_latents),
        **checkpoint_settings(args, run_dir, iteration, lora is not None),
    }


def write_record(folder: Path, record: Mapping[str, Any]) -> Path:
    path = folder / RECORD_FILE
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_record(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(sample folder, record) of a sample folder or its sample.json."""
    path = Path(path)
    record_path = path if path.is_file() else path / RECORD_FILE
    if not record_path.is_file():
        raise ReproduceError(f"{FLAG} {path}: no {RECORD_FILE} (give a validation sample folder, <run>/samples/iter_<n>/<i>_<prompt>/0)")
    return record_path.parent, json.loads(record_path.read_text(encoding="utf-8"))


def _checked_checkpoint(record: Mapping[str, Any]) -> None:
    from cogvideox_sat.io.sat_checkpoint import states_file_in

    checkpoint = record["lora_load"] or record["load"]
    if states_file_in(Path(checkpoint)) is None:
        raise ReproduceError(
            f"iteration {record['iteration']} was validated but not saved ({checkpoint} is missing or was pruned): "
            "its weights are gone. Train with save_interval dividing eval_interval (and keep_last_checkpoints "
            "high enough) to keep every validated iteration."
        )
    if record["load"] is None:
        raise ReproduceError(
            f"the LoRA run {record['run']} trained on a base that was not loaded from disk (args.load was unset, "
            "random weights) and saved only adapters: there is no base to sample with"
        )


def _flag(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def from_validation_flags(path: str | os.PathLike, output_dir: Optional[str] = None) -> list[str]:
    """sample_video.py flags that draw the validation sample at `path` again; writes the one-line
    prompt file they read into the output folder (default `<sample folder>/reproduced`)."""
    folder, record = read_record(path)
    _checked_checkpoint(record)
    config = Path(record["run"]) / TRAINING_CONFIG
    if not config.is_file():
        raise ReproduceError(f"{config} is missing: the run's config is needed to rebuild its model")
    out = Path(output_dir) if output_dir else folder / REPRODUCED
    out.mkdir(parents=True, exist_ok=True)
    line = record["prompt"] + (f"@@{(folder / record['image']).resolve()}" if record["image"] else "")
    prompt_file = out / "prompt.txt"
    prompt_file.write_text(line + "\n", encoding="utf-8")
    flags = {
        "mode": "inference",
        "load": record["load"],
        "input_type": "txt",
        "input_file": str(prompt_file),
        "output_dir": str(out),
        "seed": record["seed"],
        "batch_size": 1,
        "sampling_fps": record["fps"],
        "sampling_num_frames": record["sampling_num_frames"],
        "image2video": record["image"] is not None,
        "only_save_latents": record["only_latents"],
        "official_decode": record["official_decode"],
        "fp16": record["precision"] == "fp16",
        "bf16": record["precision"] == "bf16",
        "lora_merge": False,  # merged weights round differently from the adapters validation used
        "ema": False,  # validation samples with the live weights, not the EMA
        "model_parallel_size": 1,
        "sequence_parallel": False,
    }
    if record["lora_load"]:
        flags["lora_load"] = record["lora_load"]
    if record["decode_chunk_frames"]:
        flags["decode_chunk_frames"] = record["decode_chunk_frames"]
    argv = ["--base", str(config)]
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}", _flag(value)]
    return argv + ["--sampling-image-size", *(str(v) for v in record["sampling_image_size"])]


def expand_from_validation(argv: Sequence[str]) -> list[str]:
    """`argv` with `--from-validation PATH` replaced by the flags it stands for; the caller's
    other flags come after them, so they win (an `--output-dir` given is used for the prompt file too)."""
    argv = list(argv)
    if FLAG not in argv:
        return argv
    at = argv.index(FLAG)
    if at + 1 >= len(argv):
        raise ReproduceError(f"{FLAG} needs a validation sample folder")
    path = argv[at + 1]
    rest = argv[:at] + argv[at + 2 :]
    output_dir = next((rest[i + 1] for i, a in enumerate(rest[:-1]) if a in ("--output-dir", "--output_dir")), None)
    return from_validation_flags(path, output_dir) + rest

"""The run's argument namespace: the `args:` section of the configs plus command-line flags.

The groups mirror the official `arguments.py` (model, sampling) and SwissArmyTransformer's
training / evaluation / data argument groups, with the same names and defaults, so every key the
official sft.yaml and inference.yaml use is known. Unlike the official code, an unknown key is an
error (pydantic `extra="forbid"`), never silently dropped.

Precedence (a deliberate departure): flags given on the command line override `args:` in the
YAML files; the official code let the YAML win over an explicit flag.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelArgs(_Group):
    """Official `add_model_config_args`."""

    base: list[str] = Field(default_factory=list, description="config files, merged in order")
    model_parallel_size: int = Field(1, ge=1, description="model-parallel (and VAE context-parallel) size")
    force_pretrain: bool = False
    device: Union[int, str] = Field(-1, description="-1: LOCAL_RANK's GPU, or cpu without GPUs")
    debug: bool = False
    log_image: bool = True


class SamplingArgs(_Group):
    """Official `add_sampling_config_args` (used by sample_video.py and validation sampling)."""

    output_dir: str = "samples"
    input_dir: Optional[str] = None
    input_type: Literal["cli", "txt"] = Field("cli", description="cli: prompts from stdin; txt: from input_file")
    input_file: str = "input.txt"
    sampling_image_size: list[int] = Field(default_factory=lambda: [768, 1360], description="[height, width]")
    final_size: int = 2048
    sdedit: bool = False
    grid_num_rows: int = 1
    force_inference: bool = False
    lcm_steps: Optional[int] = None
    sampling_num_frames: int = Field(32, ge=1, description="latent frames to sample (13 -> 49 video frames)")
    sampling_fps: int = Field(8, ge=1)
    only_save_latents: bool = False
    only_log_video_latents: bool = False
    latent_channels: int = 32
    image2video: bool = False


class TrainingArgs(_Group):
    """SwissArmyTransformer `add_training_args`."""

    experiment_name: str = "MyModel"
    train_iters: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(4, ge=1, description="micro batch per GPU")
    lr: float = Field(1.0e-4, ge=0)
    mode: Literal["pretrain", "finetune", "inference"] = "pretrain"
    seed: int = 1234
    zero_stage: Literal[0, 1, 2, 3] = 0
    checkpoint_activations: bool = False
    checkpoint_num_layers: int = 1
    checkpoint_skip_layers: int = 0
    fp16: bool = False
    bf16: bool = False
    gradient_accumulation_steps: int = Field(1, ge=1)
    profiling: int = -1
    epochs: Optional[int] = Field(None, ge=1)
    log_interval: int = Field(50, ge=1)
    summary_dir: str = ""
    save_args: bool = False
    lr_decay_iters: Optional[int] = None
    lr_decay_style: Literal["constant", "linear", "cosine", "exponential"] = "linear"
    lr_decay_ratio: float = 0.1
    warmup: float = Field(0.01, ge=0, le=1, description="fraction of train_iters spent warming up")
    weight_decay: float = 0.01
    save: Optional[str] = None
    load: Optional[str] = None
    force_train: bool = False
    save_interval: int = Field(5000, ge=1)
    no_save_rng: bool = False
    no_load_rng: bool = False
    resume_dataloader: bool = False
    distributed_backend: str = "nccl"
    local_rank: Optional[int] = None
    exit_interval: Optional[int] = None
    wandb: bool = False
    wandb_project_name: str = "default_project"


class EvaluationArgs(_Group):
    """SwissArmyTransformer `add_evaluation_args`."""

    eval_batch_size: Optional[int] = None
    eval_iters: int = 100
    eval_interval: Optional[int] = None
    strict_eval: bool = False


class DataArgs(_Group):
    """SwissArmyTransformer `add_data_args`."""

    train_data: Optional[list[str]] = None
    train_data_weights: Optional[list[int]] = None
    iterable_dataset: Union[bool, Literal["custom"]] = False
    iterable_dataset_eval: Literal["True", "False", ""] = ""
    batch_from_same_dataset: bool = False
    valid_data: Optional[list[str]] = None
    test_data: Optional[list[str]] = None
    # SAT's default is 1000,1,1, which splits every train_data dataset (and fails on one under
    # block_size samples); here no split unless asked (the official sft.yaml sets 1,0,0 too)
    split: str = "1,0,0"
    num_workers: int = Field(1, ge=0)
    block_size: int = 10000
    prefetch_factor: int = 4


class DeepSpeedArgs(_Group):
    """`deepspeed.add_config_arguments` (the `deepspeed:` section fills deepspeed_config)."""

    deepspeed: bool = False
    deepspeed_config: Optional[Union[str, dict[str, Any]]] = None


class OurArgs(_Group):
    """Options of cogvideox-sat that the official code lacks."""

    resume: Optional[str] = Field(
        None, description="a run folder of ours to continue exactly (weights, optimizer, LR, RNG, data position)"
    )
    keep_last_checkpoints: Optional[int] = Field(None, ge=1, description="delete all but the newest K checkpoints")
    save_frozen_weights: bool = Field(
        False, description="also save frozen weights (LoRA base, VAE, T5) in checkpoints; default: trainable only"
    )
    max_nonfinite_steps: int = Field(
        10, ge=1, description="stop after this many non-finite losses in a row (fp16 loss-scale overflow skips are counted apart)"
    )
    save_on_signal: bool = Field(
        True,
        description="on SIGTERM, SIGINT or SIGUSR1 every rank finishes its step, saves a checkpoint and the run exits "
        "with code 75 (requeue and --resume); false: the signal's default action (no save)",
    )
    sequence_parallel: bool = Field(
        False,
        description="Ulysses sequence parallelism of the DiT over the model-parallel group: "
        "model_parallel_size ranks share one clip, attention heads split between them",
    )
    lora_load: Optional[str] = Field(
        None,
        description="a LoRA-only run folder of ours (holds `latest`) applied on top of args.load, the base transformer "
        "(sampling; training: the adapters to continue from, e.g. a diffusers LoRA converted by tools/convert_weight_hf2sat.py)",
    )
    lora_merge: bool = Field(False, description="sampling: fold LoRA adapters into the base weights first (faster, same outputs up to rounding)")
    ema: bool = Field(
        False,
        description="sampling: use the EMA weights (<latest>-ema) of the run folder: args.lora_load if given, else args.load "
        "(or pass the <run>/<n>-ema folder itself)",
    )
    official_decode: bool = Field(
        False,
        description="sampling: decode like the official sample_video.py (drops latent frame 0: 13 latents -> 48 frames); "
        "default decodes the whole clip (13 -> 49; CogVideoX1.5's padded 22 -> 81)",
    )
    decode_chunk_frames: Optional[int] = Field(
        None, ge=1, description="sampling: latent frames per VAE decode chunk (less memory); default: the official min(10, t // 2) chunks"
    )

    id_token: Optional[str] = Field(
        None,
        description="training: put in front of every caption (e.g. a rare word for a subject or style) and of validation "
        "prompts that lack it; kept in the run's training_config.yaml. Sampling: defaults to the token of the run in "
        "lora_load / load; \"\" turns it off",
    )

    train_frame_rule: Literal["8n+1", "4k+1"] = Field(
        "8n+1",
        description="frame-count rule for training clips; 4k+1 opts out of the 8N+1 rule "
        "(the VAE itself only needs 4k+1)",
    )


class RunArgs(ModelArgs, SamplingArgs, TrainingArgs, EvaluationArgs, DataArgs, DeepSpeedArgs, OurArgs):
    """Every key an `args:` section or a command-line flag may set."""


GROUPS: tuple[type[_Group], ...] = (
    ModelArgs,
    SamplingArgs,
    TrainingArgs,
    EvaluationArgs,
    DataArgs,
    DeepSpeedArgs,
    OurArgs,
)

# Flags that only make sense on the command line: a downloaded config must not be able to
# switch off the target allow-list or validation on its own.
CLI_ONLY_FLAGS = ("validate_only", "allow_any_target")


def valid_arg_keys() -> list[str]:
    return sorted(RunArgs.model_fields)


def _parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _add_field(group: argparse._ArgumentGroup, name: str, info: Any) -> None:
    flags = [f"--{name.replace('_', '-')}"]
    if "_" in name:
        flags.append(f"--{name}")
    kind = _unwrap_optional(info.annotation)
    common = dict(dest=name, default=argparse.SUPPRESS, help=info.description)
    if kind is bool:
        group.add_argument(*flags, nargs="?", const=True, type=_parse_bool, **common)
    elif typing.get_origin(kind) is list:
        group.add_argument(*flags, nargs="*", **common)
    else:
        # pydantic coerces and checks the strings later, with the same messages as for YAML
        group.add_argument(*flags, **common)


def build_parser(description: str) -> argparse.ArgumentParser:
    """A parser whose flags are generated from RunArgs (dash and underscore spellings)."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    run = parser.add_argument_group("run")
    run.add_argument(
        "--validate-only",
        "--validate_only",
        dest="validate_only",
        action="store_true",
        help="validate the configs, print the merged config and exit (0 ok, 2 problems)",
    )
    run.add_argument(
        "--allow-any-target",
        "--allow_any_target",
        dest="allow_any_target",
        action="store_true",
        help="let configs name targets outside the allow-list (only for configs you trust)",
    )
    for group_cls in GROUPS:
        group = parser.add_argument_group(group_cls.__name__.removesuffix("Args").lower(), group_cls.__doc__)
        for name, info in group_cls.model_fields.items():
            _add_field(group, name, info)
    return parser

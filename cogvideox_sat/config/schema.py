"""Typed schemas of the `deepspeed:` and `data:` sections, and pydantic errors as Problems.

The `args:` section's schema is `cogvideox_sat.arguments.RunArgs`; the `model:` section is
checked against the constructors its targets name (`cogvideox_sat.config.targets`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cogvideox_sat.config.problems import Problem, closest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerSection(_Strict):
    type: str
    params: dict[str, Any] = Field(default_factory=dict)


class SchedulerSection(_Strict):
    type: str
    params: dict[str, Any] = Field(default_factory=dict)


class ActivationCheckpointingSection(_Strict):
    partition_activations: bool = False
    contiguous_memory_optimization: bool = False
    cpu_checkpointing: bool = False
    number_checkpoints: Optional[int] = None
    synchronize_checkpoint_boundary: bool = False
    profile: bool = False


class DeepSpeedSection(_Strict):
    """Top-level keys of a DeepSpeed config. `zero_optimization`, `fp16` and `bf16` are
    checked again by DeepSpeed's own pydantic models (see `deepspeed_problems`)."""

    train_batch_size: Optional[int] = Field(None, ge=1)
    train_micro_batch_size_per_gpu: Optional[int] = Field(None, ge=1)
    gradient_accumulation_steps: Optional[int] = Field(None, ge=1)
    steps_per_print: Optional[int] = None
    gradient_clipping: Optional[float] = Field(None, ge=0)
    prescale_gradients: Optional[bool] = None
    gradient_predivide_factor: Optional[float] = None
    zero_optimization: dict[str, Any] = Field(default_factory=dict)
    zero_allow_untested_optimizer: Optional[bool] = None
    zero_force_ds_cpu_optimizer: Optional[bool] = None
    fp16: dict[str, Any] = Field(default_factory=dict)
    bf16: dict[str, Any] = Field(default_factory=dict)
    optimizer: Optional[OptimizerSection] = None
    scheduler: Optional[SchedulerSection] = None
    activation_checkpointing: Optional[ActivationCheckpointingSection] = None
    wall_clock_breakdown: Optional[bool] = None
    memory_breakdown: Optional[bool] = None
    dump_state: Optional[bool] = None
    communication_data_type: Optional[str] = None
    data_types: Optional[dict[str, Any]] = None
    checkpoint: Optional[dict[str, Any]] = None
    tensorboard: Optional[dict[str, Any]] = None
    wandb: Optional[dict[str, Any]] = None
    csv_monitor: Optional[dict[str, Any]] = None
    flops_profiler: Optional[dict[str, Any]] = None
    # The official sft.yaml puts these fp16 loss-scaling keys at the top level, where DeepSpeed
    # ignores them. Accepted so the official file loads unchanged; see rules.ignored_loss_scale_keys.
    loss_scale: Optional[float] = None
    loss_scale_window: Optional[int] = None
    hysteresis: Optional[int] = None
    min_loss_scale: Optional[float] = None


MISPLACED_FP16_KEYS = ("loss_scale", "loss_scale_window", "hysteresis", "min_loss_scale")


class DataSection(_Strict):
    """`data:` names a dataset class; its params are checked against that constructor."""

    target: str
    params: dict[str, Any] = Field(default_factory=dict)


def pydantic_problems(
    err: ValidationError,
    prefix: str,
    valid_keys: list[str],
    file_of: Callable[[str], str],
) -> list[Problem]:
    """Turn pydantic's errors into Problems with file, key path and a fix."""
    problems = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        key = f"{prefix}.{loc}" if loc else prefix
        if item["type"] == "extra_forbidden":
            leaf = str(item["loc"][-1])
            problems.append(
                Problem(key, "unknown key", f"remove it or rename it; {closest(leaf, valid_keys)}", file_of(key))
            )
        else:
            got = item.get("input")
            problems.append(Problem(key, f"{item['msg']} (got {got!r})", "", file_of(key)))
    return problems


def deepspeed_problems(section: dict[str, Any], file_of: Callable[[str], str]) -> list[Problem]:
    """Schema problems of the `deepspeed:` section, using DeepSpeed's own sub-models."""
    problems: list[Problem] = []
    try:
        DeepSpeedSection.model_validate(section)
    except ValidationError as err:
        problems += pydantic_problems(err, "deepspeed", list(DeepSpeedSection.model_fields), file_of)
    for key, model in _deepspeed_submodels().items():
        if not isinstance(section.get(key), dict) or not section[key]:
            continue
        try:
            model(**section[key])
        except ValidationError as err:
            valid = list(model.model_fields)
            problems += pydantic_problems(err, f"deepspeed.{key}", valid, file_of)
    return problems


def _deepspeed_submodels() -> dict[str, Any]:
    # imported lazily: DeepSpeed takes seconds to import and logs its accelerator choice
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    return {"zero_optimization": DeepSpeedZeroConfig, "fp16": DeepSpeedFP16Config, "bf16": DeepSpeedBF16Config}

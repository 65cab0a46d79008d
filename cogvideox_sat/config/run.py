"""Load, validate and turn the `--base` configs into the run's argument namespace."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from pydantic import ValidationError

from cogvideox_sat.arguments import RunArgs, valid_arg_keys
from cogvideox_sat.config.context import RunContext, RunKind
from cogvideox_sat.config.loading import SECTIONS, ConfigError, LoadedConfig, load_configs
from cogvideox_sat.config.problems import Problem, closest
from cogvideox_sat.config.rules import run_rules
from cogvideox_sat.config.schema import DataSection, deepspeed_problems, pydantic_problems
from cogvideox_sat.config.targets import check_blocks

DEFAULT_TRAIN_ITERS = 10000  # the official default when neither train_iters nor epochs is set


@dataclass
class ValidatedRun:
    """The outcome of validation: the typed args (None if invalid) and every problem found."""

    kind: RunKind
    loaded: Optional[LoadedConfig]
    args: Optional[RunArgs]
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]

    @property
    def ok(self) -> bool:
        return not self.errors

    def merged_yaml(self) -> str:
        """The merged config with the effective args (defaults left out), as YAML."""
        if self.loaded is None:
            return ""
        merged = OmegaConf.to_container(self.loaded.merged, resolve=True)
        if self.args is not None:
            merged["args"] = self.args.model_dump(exclude_unset=True, exclude={"base"})
        return OmegaConf.to_yaml(OmegaConf.create(merged))


def _engine_keys() -> frozenset[str]:
    from cogvideox_sat.engine import ENGINE_KEYS

    return frozenset(ENGINE_KEYS)


def _model_section_problems(ctx: RunContext) -> list[Problem]:
    model = ctx.model
    if not model:
        return [Problem("model", "no model section", "pass a model config first, e.g. --base configs/cogvideox_2b.yaml configs/sft.yaml", ctx.loaded.files[0])]
    keys = _engine_keys()
    return [
        Problem(f"model.{k}", "unknown key", f"remove it; {closest(k, keys)}", ctx.file_of(f"model.{k}"))
        for k in model
        if k not in keys
    ]


def validate_run(
    paths: Sequence[str],
    kind: RunKind,
    cli_args: Optional[Mapping[str, Any]] = None,
) -> ValidatedRun:
    """Check everything that can be checked without loading a model, checkpoint or data."""
    cli_args = dict(cli_args or {})
    try:
        loaded = load_configs(paths)
    except ConfigError as err:
        return ValidatedRun(kind, None, None, [Problem("--base", str(err))])

    problems: list[Problem] = [
        Problem(str(k), "unknown top-level section", f"use one of {', '.join(SECTIONS)}; {closest(str(k), SECTIONS)}", loaded.file_of(str(k)))
        for k in loaded.merged
        if k not in SECTIONS
    ]

    # 1. args: the typed namespace (command-line flags override the YAML)
    raw_args = {**loaded.section("args"), **cli_args, "base": list(paths)}
    ctx = RunContext(loaded, kind, None, frozenset(cli_args))
    try:
        ctx.args = RunArgs.model_validate(raw_args)
    except ValidationError as err:
        problems += pydantic_problems(err, "args", valid_arg_keys(), ctx.file_of)
        # keep checking the rest: the rules see the args without the keys that failed
        bad = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
        try:
            ctx.args = RunArgs.model_validate({k: v for k, v in raw_args.items() if k not in bad})
        except ValidationError:
            ctx.args = None

    # 2. deepspeed and data sections
    if ctx.deepspeed:
        problems += deepspeed_problems(ctx.deepspeed, ctx.file_of)
    if ctx.data:
        try:
            DataSection.model_validate(ctx.data)
        except ValidationError as err:
            problems += pydantic_problems(err, "data", list(DataSection.model_fields), ctx.file_of)

    # 3. model section keys and every target block (resolved, params checked)
    problems += _model_section_problems(ctx)
    for section in ("model", "data"):
        blocks, block_problems = check_blocks(loaded.section(section), section, ctx.file_of)
        ctx.blocks += blocks
        problems += block_problems

    # 4. cross-key invariants
    problems += run_rules(ctx)
    return ValidatedRun(kind, loaded, ctx.args, problems)


CHECKPOINT_ARGS = ("checkpoint_activations", "checkpoint_num_layers", "checkpoint_skip_layers")


def apply_checkpoint_args(model_config: DictConfig, args: RunArgs) -> None:
    """`args.checkpoint_*` set in a config or on the command line override the DiT's
    `transformer_args` (SAT's transformer reads them there; officially both places had to agree)."""
    block = OmegaConf.select(model_config, "network_config.params")
    if block is None:
        return
    for name in CHECKPOINT_ARGS:
        if name in args.model_fields_set:
            OmegaConf.update(block, f"transformer_args.{name}", getattr(args, name), force_add=True)


def to_namespace(run: ValidatedRun) -> argparse.Namespace:
    """The argument namespace the engine and training loop read, as the official get_args builds it.

    DeepSpeed's section is the source of truth for precision, batch size, accumulation, ZeRO stage,
    lr and weight decay during training (validation made sure args do not contradict it).
    """
    if not run.ok or run.loaded is None or run.args is None:
        raise ValueError("to_namespace needs a run that passed validation")
    ns = argparse.Namespace(**run.args.model_dump())
    merged: DictConfig = run.loaded.merged
    ns.model_config = merged.get("model", OmegaConf.create())
    apply_checkpoint_args(ns.model_config, run.args)
    ns.data_config = merged.get("data")
    ns.log_config = [OmegaConf.to_container(OmegaConf.load(p)) for p in run.loaded.files]
    ns.log_config_merged = OmegaConf.to_container(OmegaConf.create(run.merged_yaml()))
    ns.rank = int(os.environ.get("RANK", "0"))
    ns.world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if ns.local_rank is None:
        ns.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    ds = run.loaded.section("deepspeed")
    if run.kind == "train":
        ns.deepspeed = True
        ns.deepspeed_config = ds
        ns.fp16 = bool((ds.get("fp16") or {}).get("enabled", ns.fp16))
        ns.bf16 = bool((ds.get("bf16") or {}).get("enabled", ns.bf16))
        ns.batch_size = ds.get("train_micro_batch_size_per_gpu", ns.batch_size)
        ns.gradient_accumulation_steps = ds.get("gradient_accumulation_steps", ns.gradient_accumulation_steps)
        ns.zero_stage = (ds.get("zero_optimization") or {}).get("stage", ns.zero_stage)
        opt = (ds.get("optimizer") or {}).get("params") or {}
        ns.lr = opt.get("lr", ns.lr)
        ns.weight_decay = opt.get("weight_decay", ns.weight_decay)
        ns.deepspeed_activation_checkpointing = ns.checkpoint_activations
        if ns.train_iters is None and ns.epochs is None:
            ns.train_iters = DEFAULT_TRAIN_ITERS
    else:
        ns.deepspeed_config = ds or None
    return ns

"""Exponential moving average of the trainable weights, as SAT's `FusedEmaAdam` keeps it.

The official sft.yaml trains with `sat.ops.FusedEmaAdam`: AdamW whose fused kernel also updates
`shadow = d * shadow + (1 - d) * weight` after every applied optimizer step n (counted from 1),
with `d = min(ema_decay, (1 + n) / (10 + n))` (constant `ema_decay` with `use_num_upates: false`).
Its kernel needs SAT's CUDA build, so we keep the same shadow beside DeepSpeed's AdamW:

- the shadow is fp32 and follows the fp32 *master* weights (under ZeRO-1/2, the bf16/fp16
  optimizer and ZeRO-3 each rank keeps the shadow of its own master partition, as the official
  optimizer does; without mixed precision or ZeRO the parameter is the master);
- it starts from the weights the run starts from (loaded base or init), like the kernel's
  `state['shadow'] = p.data.clone()` at the first step;
- a step DeepSpeed skips (fp16 overflow) does not advance it: the official optimizer's `step()`
  is never called for such a step either;
- every save writes `<n>-ema/mp_rank_00_model_states.pt` beside `<n>/` (same `module` keys, the
  EMA values in fp32, frozen tensors equal to the weights), and resume restores shadow and step
  count from it (the official code restarts the warm-up; we continue it exactly).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from cogvideox_sat import distributed
from cogvideox_sat.io.sat_checkpoint import EMA_SUFFIX

DEFAULT_DECAY = 0.9999
# optimizer types that keep an EMA, and the optimizer params that only they accept
EMA_OPTIMIZERS = ("sat.ops.FusedEmaAdam", "FusedEmaAdam")
EMA_PARAMS = ("ema_decay", "use_num_upates", "use_num_updates")  # SAT spells it `use_num_upates`
# FusedEmaAdam params DeepSpeed's AdamW has no use for: (name, value under which they change nothing)
_ADAM_DEFAULTS = {"bias_correction": True, "adam_w_mode": True, "amsgrad": False, "set_grad_none": True}


@dataclass(frozen=True)
class EmaSettings:
    decay: float = DEFAULT_DECAY
    warmup: bool = True  # SAT's use_num_upates: d = min(decay, (1 + n) / (10 + n))

    def decay_at(self, step: int) -> float:
        """The decay used by the `step`-th applied optimizer step (1-based)."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay


def has_ema(optimizer: Optional[Mapping[str, Any]]) -> bool:
    return bool(optimizer) and str(optimizer.get("type", "")) in EMA_OPTIMIZERS


def ema_settings(optimizer: Optional[Mapping[str, Any]]) -> Optional[EmaSettings]:
    """The EMA the `deepspeed.optimizer` section asks for, or None (validated by `ema_problems`)."""
    if not has_ema(optimizer):
        return None
    params = optimizer.get("params") or {}
    warmup = params.get("use_num_upates", params.get("use_num_updates", True))
    return EmaSettings(float(params.get("ema_decay", DEFAULT_DECAY)), bool(warmup))


def ema_problems(optimizer: Optional[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(key under deepspeed.optimizer, message, fix) for every EMA setting that cannot run."""
    if not optimizer:
        return []
    params = optimizer.get("params") or {}
    if not has_ema(optimizer):
        return [
            (f"params.{k}", f"{optimizer.get('type')!r} keeps no EMA of the weights, so {k} would do nothing",
             f"use type: sat.ops.FusedEmaAdam (AdamW + EMA) or remove {k}")
            for k in EMA_PARAMS if k in params
        ]
    problems = []
    decay = params.get("ema_decay", DEFAULT_DECAY)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
        problems.append(("params.ema_decay", f"must be a number in (0, 1), got {decay!r}", "use e.g. 0.9999 (SAT's default)"))
    for key, neutral in _ADAM_DEFAULTS.items():
        if key in params and params[key] != neutral:
            problems.append((f"params.{key}", f"{key}={params[key]!r} is not supported (AdamW runs the update)", f"remove it or set {key}: {neutral}"))
    return problems


def adam_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """FusedEmaAdam's params without the ones DeepSpeed's AdamW does not take."""
    return {k: v for k, v in params.items() if k not in EMA_PARAMS and k not in _ADAM_DEFAULTS}


def ema_tag(tag: str) -> str:
    return f"{tag}{EMA_SUFFIX}"


# ---- the master weights each rank owns --------------------------------------------------------
@dataclass
class _Piece:
    """This rank's part of a parameter's fp32 master: flat elements [start, start + numel)."""

    start: int
    numel: int
    group: Any  # process group whose ranks hold the other pieces (None: every rank holds all)


def _piece(param: torch.nn.Parameter) -> _Piece:
    if hasattr(param, "ds_id"):  # ZeRO-3: contiguous padded partitions in rank order
        group = param.ds_process_group
        size = param.ds_tensor.ds_numel
        start = size * distributed.group_rank(group)
        return _Piece(start, max(0, min(size, param.ds_numel - start)), group)
    if hasattr(param, "_hp_mapping"):  # ZeRO-1/2 and DeepSpeed's bf16 optimizer
        mapping = param._hp_mapping
        if mapping is None:
            return _Piece(0, 0, param._dp_group)
        return _Piece(mapping.lp_fragment_address.start, mapping.lp_fragment_address.numel, param._dp_group)
    return _Piece(0, param.numel(), None)  # plain fp32 parameter: it is the master


def _master(param: torch.nn.Parameter, piece: _Piece) -> torch.Tensor:
    """The fp32 master values of this rank's piece, flat (read afresh: optimizers swap storage)."""
    if piece.numel == 0:
        return torch.empty(0, device=param.device)
    if hasattr(param, "ds_id"):
        return param._z3_optimizer.get_local_fp32_param(param).narrow(0, 0, piece.numel)
    if hasattr(param, "_hp_mapping"):
        return param._hp_mapping.get_hp_fragment().reshape(-1)
    return param.detach().reshape(-1)


class WeightEma:
    """The shadow of every trainable parameter's master piece on this rank, and the step count."""

    def __init__(self, module: torch.nn.Module, settings: EmaSettings):
        self.settings = settings
        self.num_updates = 0
        self.changes: list[str] = []  # settings that differ from a loaded checkpoint's (`load`)
        self._params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        self._pieces = {n: _piece(p) for n, p in self._params.items()}
        self.shadow = {n: _master(p, self._pieces[n]).detach().float().clone() for n, p in self._params.items()}

    def update(self) -> None:
        """After an applied optimizer step: shadow = d * shadow + (1 - d) * master."""
        self.num_updates += 1
        d = np.float32(self.settings.decay_at(self.num_updates))
        keep, take = float(d), float(np.float32(1.0) - d)  # in fp32, as the fused kernel computes them
        with torch.no_grad():
            for name, param in self._params.items():
                shadow = self.shadow[name]
                if shadow.numel():
                    shadow.mul_(keep).add_(_master(param, self._pieces[name]).float(), alpha=take)

    def full(self, name: str) -> torch.Tensor:
        """The whole shadow of `name` on CPU (a collective under ZeRO: every rank calls it)."""
        param, piece = self._params[name], self._pieces[name]
        if piece.group is None:
            return self.shadow[name].reshape(param.shape).cpu().clone()
        shape = param.ds_shape if hasattr(param, "ds_id") else param.shape
        total = torch.zeros(int(np.prod(shape)), dtype=torch.float32, device=self.shadow[name].device)
        total.narrow(0, piece.start, piece.numel).copy_(self.shadow[name])
        distributed.sum_over_group_(total, piece.group)
        return total.reshape(shape).cpu()

    def save(self, weights: Mapping[str, torch.Tensor], target: Path, iteration: int) -> None:
        """Write the EMA model states: `weights`' keys (what `<n>/` holds), trainable ones replaced
        by the shadow. Every rank calls this (gathers); the main rank writes, atomically."""
        module = {}
        for name in self._params:
            value = self.full(name)
            if name in weights:
                module[name] = value
        if not distributed.is_rank0():
            return
        module = {k: module.get(k, v) for k, v in weights.items()}
        state = {"module": module, "iteration": iteration, "ema": {"num_updates": self.num_updates, "decay": self.settings.decay, "warmup": self.settings.warmup}}
        _save_atomically(state, target)

    def load(self, path: Path) -> None:
        """Restore shadow and step count from an EMA model-states file written by `save`."""
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        missing = [n for n in self._params if n not in blob["module"]]
        if missing or "ema" not in blob:
            raise RuntimeError(f"{path} lacks the EMA of {len(missing)} trainable tensors (first: {missing[:1]}) or its step count: "
                               "it was written by another model config; resume with the config that wrote it")
        self.num_updates = int(blob["ema"]["num_updates"])
        written = {"ema_decay": blob["ema"].get("decay"), "use_num_upates": blob["ema"].get("warmup")}
        current = {"ema_decay": self.settings.decay, "use_num_upates": self.settings.warmup}
        # the config's settings go on from the saved step count; say where they differ
        self.changes = [f"{key} {written[key]} -> {current[key]}" for key in written if written[key] is not None and written[key] != current[key]]
        for name, shadow in self.shadow.items():
            piece = self._pieces[name]
            saved = blob["module"][name].reshape(-1)
            shadow.copy_(saved.narrow(0, piece.start, piece.numel).to(torch.float32))


def _save_atomically(state: dict[str, Any], target: Path) -> None:
    """Write `<folder>/<name>-ema/…pt` under a temporary folder name, then rename it into place."""
    folder = target.parent
    tmp = folder.with_name(f".{folder.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp / target.name)
    with open(tmp / target.name, "rb") as f:
        os.fsync(f.fileno())
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)

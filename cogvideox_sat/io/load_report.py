"""Strict state-dict loading that says what did not match.

`torch.nn.Module.load_state_dict(strict=False)` returns two lists and raises on the first
shape mismatch; silently lenient loading is how wrong checkpoints train for days. Here every
difference is collected into a `LoadReport` (missing, unexpected, wrong shape, renamed on the
way, deliberately left at init, keys of other sub-models ignored) and strict mode raises with
all of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not match the model under strict loading; the message lists why."""

    def __init__(self, report: LoadReport):
        super().__init__(report.summary())
        self.report = report


@dataclass
class LoadReport:
    """Outcome of loading a state dict into a module."""

    source: str = ""
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    remapped: list[tuple[str, str, str]] = field(default_factory=list)  # (checkpoint key, model key, why)
    kept: list[str] = field(default_factory=list)  # model keys absent on purpose: they keep their values
    ignored: dict[str, int] = field(default_factory=dict)  # other prefixes -> number of keys

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 20) -> str:
        lines = [f"loaded {self.loaded} tensors" + (f" from {self.source}" if self.source else "")]

        def block(title: str, items: list[str]) -> None:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items[:limit])
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")

        block("missing in checkpoint", self.missing)
        block("unexpected in checkpoint", self.unexpected)
        block("shape mismatch (checkpoint vs model)", [f"{k}: {a} vs {b}" for k, a, b in self.mismatched])
        block("renamed", [f"{a} -> {b} ({why})" for a, b, why in self.remapped])
        block("not in checkpoint, kept as they are (allowed)", self.kept)
        if self.ignored:
            lines.append("ignored other sub-models: " + ", ".join(f"{p}* ({n})" for p, n in sorted(self.ignored.items())))
        from .lora_state import ORIGINAL, is_lora_key  # lazy: lora_state imports the model package

        if any(is_lora_key(k) or ORIGINAL in k for k in self.unexpected):
            lines.append("hint: the checkpoint holds LoRA tensors; build the model with the same lora_config (r, lora_alpha)")
        return "\n".join(lines)


def load_state_dict_with_report(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    strict: bool = True,
    keep_ok: Iterable[str] = (),
    required: Iterable[str] | None = None,
    report: LoadReport | None = None,
) -> LoadReport:
    """Copy matching tensors into `module` and report every difference.

    A model key absent from `state_dict` is *missing* unless it is in `keep_ok` (e.g. new LoRA
    adapters on a base checkpoint) or `required` is given and does not contain it (a checkpoint
    of only the trained tensors); such keys are recorded as `kept` and keep their values.
    Strict: raise `CheckpointMismatchError` before changing anything if anything is missing,
    unexpected or of the wrong shape. Lenient: load what matches.
    """
    report = report if report is not None else LoadReport()
    expected = module.state_dict()
    keep_ok = set(keep_ok)
    required = set(expected) if required is None else set(required)
    for key, target in expected.items():
        if key not in state_dict:
            (report.missing if key in required and key not in keep_ok else report.kept).append(key)
        elif tuple(state_dict[key].shape) != tuple(target.shape):
            report.mismatched.append((key, tuple(state_dict[key].shape), tuple(target.shape)))
    report.unexpected.extend(k for k in state_dict if k not in expected)
    if strict and not report.ok:
        raise CheckpointMismatchError(report)

    bad = {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in state_dict.items() if k in expected and k not in bad}
    module.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    return report

"""Optimizer hyper-parameters on resume: the config's, not the checkpoint's.

torch's `Optimizer.load_state_dict` (which DeepSpeed calls on resume) replaces every param group's
settings with the saved ones, so a `weight_decay`, `betas` or `eps` changed in the config before
`--resume` would be silently dropped. `group_settings` takes the settings the config built before
the checkpoint loads; `restore_settings` puts them back afterwards and lists what the checkpoint
had otherwise. The LR (`lr`, `initial_lr`) is left to the LR schedule (`schedule.ConfiguredLR`).
"""

from __future__ import annotations

from typing import Any

SCHEDULED = ("lr", "initial_lr")


def param_groups(optimizer: Any) -> list[dict[str, Any]]:
    """The groups of a torch optimizer or of the DeepSpeed wrapper around one (ZeRO's and the fp16
    wrappers expose `param_groups`; the bf16 one only holds the torch optimizer as `.optimizer`)."""
    while not hasattr(optimizer, "param_groups") and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer.param_groups


def group_settings(optimizer: Any) -> list[dict[str, Any]]:
    """Every param group's settings (all but its parameters)."""
    return [{k: v for k, v in group.items() if k != "params"} for group in param_groups(optimizer)]


def _same(a: Any, b: Any) -> bool:
    """Equal settings; a list from a YAML config equals the tuple a checkpoint holds."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def restore_settings(optimizer: Any, settings: list[dict[str, Any]]) -> list[str]:
    """Put `settings` (from `group_settings`) back into the loaded optimizer's groups; one line per
    value the checkpoint had that differed."""
    changes = []
    for index, (group, wanted) in enumerate(zip(param_groups(optimizer), settings)):
        for key, value in wanted.items():
            if key in SCHEDULED or key not in group or _same(group[key], value):
                continue
            changes.append(f"param group {index}: {key} {group[key]} -> {value}")
            group[key] = value
    return changes

"""`LoraMixin`: SAT's `sat.model.finetune.lora2.LoraMixin` for the CogVideoX DiT.

Constructor-compatible with SAT's (`layer_num, r, lora_alpha=1, lora_dropout, layer_range,
qlora, cross_attention`) and a subclass of it; adds `target_modules` so the MLP can be adapted
too. The wrapped layers keep SAT's parameter names
(`transformer.layers.N.attention.query_key_value.{original.weight, matrix_A.{0,1,2},
matrix_B.{0,1,2}}`, `...attention.dense.matrix_A.0`, ...), so official LoRA checkpoints load
strictly. SAT's own `reinit`/`merge_lora` are replaced (see `lora_linear` for why).

Importing this module imports SwissArmyTransformer (a few seconds); `cogvideox_sat.models`
loads it only when `LoraMixin` is first used.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar

from sat.model.finetune import lora2
from torch import nn

from .lora_linear import LoraLinear

# target -> number of output partitions (q, k, v get separate adapters, as in SAT)
_PARTITIONS: dict[str, int] = {
    "attention.query_key_value": 3,
    "attention.dense": 1,
    "mlp.dense_h_to_4h": 1,
    "mlp.dense_4h_to_h": 1,
}


class LoraMixin(lora2.LoraMixin):
    """Low-rank adapters on the chosen linears of layers `layer_range` (default: all)."""

    SUPPORTED_TARGETS: ClassVar[tuple[str, ...]] = tuple(_PARTITIONS)
    DEFAULT_TARGETS: ClassVar[tuple[str, ...]] = ("attention.query_key_value", "attention.dense")

    def __init__(
        self,
        layer_num: int,
        r: int = 0,
        lora_alpha: float = 1,
        lora_dropout: float = 0.0,
        layer_range: Sequence[int] | None = None,
        qlora: bool = False,
        cross_attention: bool = True,
        target_modules: Sequence[str] | str = DEFAULT_TARGETS,
    ):
        if not isinstance(r, int) or r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer, got {r!r} (e.g. r: 128)")
        if qlora:
            raise ValueError("qlora (4-bit base weights via bitsandbytes) is not supported")
        targets = (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)
        unknown = [t for t in targets if t not in self.SUPPORTED_TARGETS]
        if unknown or not targets:
            raise ValueError(f"LoRA target_modules {list(targets)}: choose from {', '.join(self.SUPPORTED_TARGETS)}")
        layers = list(range(layer_num)) if layer_range is None else [int(i) for i in layer_range]
        bad = [i for i in layers if not 0 <= i < layer_num]
        if bad:
            raise ValueError(f"LoRA layer_range {bad} outside the model's {layer_num} layers")
        super().__init__(layer_num, r, lora_alpha, lora_dropout, layers, qlora, cross_attention)
        self.target_modules = targets

    def reinit(self, parent_model: nn.Module | None = None) -> None:
        """Wrap each target Linear of each chosen layer (the base weights are kept as `original`)."""
        for layer_id in self.layer_range:
            layer = self.transformer.layers[layer_id]
            for target in self.target_modules:
                parent, name = _resolve(layer, target)
                linear = getattr(parent, name)
                if isinstance(linear, LoraLinear):
                    continue
                setattr(parent, name, LoraLinear(linear, _PARTITIONS[target], self.r, self.lora_alpha, self.lora_dropout))

    def merge_lora(self) -> None:
        """Fold every adapter into its base weight: the wrapped layers become plain Linears again
        (keys `...query_key_value.weight`), numerically the same model."""
        for layer_id in self.layer_range:
            layer = self.transformer.layers[layer_id]
            for target in self.target_modules:
                parent, name = _resolve(layer, target)
                linear = getattr(parent, name)
                if isinstance(linear, LoraLinear):
                    setattr(parent, name, linear.merged())


def _resolve(layer: nn.Module, target: str) -> tuple[nn.Module, str]:
    path, _, name = target.rpartition(".")
    return layer.get_submodule(path), name


def lora_layers(module: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    """All LoRA-wrapped linears in `module`, with their qualified names."""
    for name, child in module.named_modules():
        if isinstance(child, LoraLinear):
            yield name, child


def lora_parameter_names(module: nn.Module) -> list[str]:
    """Qualified names of the adapter tensors (`...matrix_A.i`, `...matrix_B.i`)."""
    return [
        f"{name}.{kind}.{i}"
        for name, layer in lora_layers(module)
        for kind in ("matrix_A", "matrix_B")
        for i in range(layer.partition)
    ]


def mark_only_lora_trainable(module: nn.Module, extra: Iterable[str] = ()) -> int:
    """requires_grad only for adapter tensors (and names containing any of `extra`); returns the
    number of trainable elements."""
    keep = set(lora_parameter_names(module))
    extra = tuple(extra)
    total = 0
    for name, param in module.named_parameters():
        trainable = name in keep or any(e in name for e in extra)
        param.requires_grad_(trainable)
        total += param.numel() if trainable else 0
    return total


def merge_lora(module: nn.Module) -> int:
    """Fold all adapters inside `module` into their base weights; returns how many were merged."""
    merged = 0
    for name, layer in list(lora_layers(module)):
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name), child, layer.merged())
        merged += 1
    return merged

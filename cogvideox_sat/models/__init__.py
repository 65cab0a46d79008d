"""DiffusionTransformer backbone and its SAT mixins (official key names).

`LoraMixin` (a subclass of SwissArmyTransformer's lora2.LoraMixin) is imported on first use:
importing SAT takes seconds and is only needed for LoRA.
"""

from __future__ import annotations

from typing import Any

from .adaln import AdaLNMixin
from .dit import DiffusionTransformer
from .final_layer import FinalLayerMixin
from .lora_linear import LoraLinear
from .patch_embed import ImagePatchEmbeddingMixin
from .pos_embed import Basic3DPositionEmbeddingMixin
from .rotary_pos_embed import Rotary3DPositionEmbeddingMixin
from .swiglu import SwiGLUMixin
from .transformer_args import CHECKPOINT_MODES, TransformerArgs

__all__ = [
    "AdaLNMixin",
    "Basic3DPositionEmbeddingMixin",
    "CHECKPOINT_MODES",
    "DiffusionTransformer",
    "FinalLayerMixin",
    "ImagePatchEmbeddingMixin",
    "LoraLinear",
    "LoraMixin",
    "Rotary3DPositionEmbeddingMixin",
    "SwiGLUMixin",
    "TransformerArgs",
]


def __getattr__(name: str) -> Any:
    if name == "LoraMixin":
        from .lora import LoraMixin

        return LoraMixin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

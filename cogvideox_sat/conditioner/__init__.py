"""Conditioners: GeneralConditioner and the frozen T5 text embedder.

Importing this package does not import transformers; FrozenT5Embedder does when built.
"""

from cogvideox_sat.conditioner.embedder import AbstractEmbModel
from cogvideox_sat.conditioner.general import EMBEDDER_BLOCK_KEYS, GeneralConditioner
from cogvideox_sat.conditioner.t5 import FrozenT5Embedder

__all__ = ["AbstractEmbModel", "EMBEDDER_BLOCK_KEYS", "FrozenT5Embedder", "GeneralConditioner"]

"""Base class of the embedders a GeneralConditioner holds."""

from __future__ import annotations

from typing import Any

from torch import nn


class AbstractEmbModel(nn.Module):
    """An embedder plus the per-embedder settings GeneralConditioner assigns from its config
    block: `is_trainable`, `ucg_rate` (classifier-free dropout probability), `input_key` (the
    batch key it embeds) or `input_keys`, and `legacy_ucg_val` (replace the raw input instead
    of zeroing the embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.is_trainable: bool = False
        self.ucg_rate: float = 0.0
        self.input_key: str | None = None
        self.input_keys: list[str] | None = None
        self.legacy_ucg_val: Any = None

"""Base class of the DiT's mixins (`mixins.<name>.*` in the state dict), SAT-style.

A mixin owns parameters that SwissArmyTransformer keeps beside the transformer body and sees
the body through `self.transformer` (a plain reference, not a submodule, so the body's
parameters are not registered twice). `reinit(parent_model)` initialises the mixin's own
weights when it is added, like SAT's `BaseMixin.reinit`.

Deliberately not `sat.model.base_model.BaseMixin`: importing SAT costs seconds and pulls
wandb/transformers/datasets in; nothing here uses SAT's hook machinery.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class Mixin(nn.Module):
    """A named add-on of `DiffusionTransformer` (see module docstring)."""

    transformer: Any = None  # set by DiffusionTransformer.add_mixin

    def reinit(self, parent_model: nn.Module | None = None) -> None:
        """Initialise this mixin's weights (default: keep the constructors' init)."""

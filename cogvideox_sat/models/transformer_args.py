"""`transformer_args`: the official network block's SAT transformer settings, validated.

The official code hands this block to SwissArmyTransformer as an argparse-like namespace that
silently ignores unknown keys. Here every key is known, unknown keys raise with the valid
choices, and keys of ours are added (speed switches; the first three give results equal up to
float rounding, the two FP8 keys are opt-in approximations):

- `checkpoint_mode`: which activation checkpointing `checkpoint_activations: true` means:
  `full` (recompute whole layers, the official behaviour and default), `selective` (keep the
  attention outputs, recompute the cheap rest), `selective_mlp_out`, `selective_matmul` (keep
  more, see `cogvideox_sat.models.checkpointing` for the memory each costs), `none`, or `auto`:
  one mode per layer, planned for each input shape so that the tensors all layers keep between
  forward and backward fit `checkpoint_budget_gib` (the activations only, not the whole peak:
  weights, gradients and optimizer state come on top), most recompute time per byte first
  (`cogvideox_sat.models.checkpoint_plan`).
- `attention_backend`: torch SDPA backend, see `cogvideox_sat.models.attention.BACKENDS`.
- `compile`: `true` runs each transformer layer (with its checkpointing) through `torch.compile`,
  which fuses the elementwise work (adaLN modulation + LayerNorm, gated residuals, GELU,
  QK-norm, RoPE); `max-autotune` also lets inductor time Triton matmuls against cuBLAS and fold
  that work into the matmuls that win (longer first step; see `models.checkpointing`). Needs
  dropout 0 (all released configs).
- `fp8`: `false` (default), `true` (= `tensorwise`), `tensorwise` or `rowwise`: the projection
  matmuls in FP8 through torchao (`cogvideox_sat.models.fp8`); under LoRA the frozen base's
  matmuls, the adapters stay in bf16. Needs a CUDA GPU with FP8 (sm89+), `dtype: bf16` (fp32 and
  fp16 models are the official-parity path, kept exact) and torchao; best with `compile: true`.
- `fp8_base_storage`: LoRA only: the frozen base weights stored in float8 e4m3 with per-row
  scales and upcast layer by layer at use (`cogvideox_sat.models.fp8_storage`). Needs a CUDA GPU
  and `compile: false` (compiled, its layers kept their MLP activations: 53 vs 12 GiB on an H100).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .attention import BACKENDS
from .checkpoint_plan import AUTO
from .checkpointing import CHECKPOINT_MODES, COMPILE_MODES
from .fp8 import RECIPES as FP8_RECIPES


@dataclass(frozen=True)
class TransformerArgs:
    """Validated `transformer_args` (official names and SAT defaults)."""

    checkpoint_activations: bool = False
    checkpoint_num_layers: int = 1
    checkpoint_skip_layers: int = 0
    checkpoint_mode: str | None = None
    checkpoint_budget_gib: float | None = None  # checkpoint_mode auto: GiB of kept activations
    attention_backend: str = "auto"
    compile: bool | str = False  # true, false or a COMPILE_MODES name other than default
    fp8: bool | str = False
    fp8_base_storage: bool = False
    vocab_size: int = 1  # SAT word embeddings; the patch embedding replaces them (unused)
    max_sequence_length: int = 64  # rows of the unused `transformer.position_embeddings` (RoPE models)
    layernorm_order: str = "pre"
    layernorm_epsilon: float = 1e-5
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    skip_init: bool = False
    model_parallel_size: int = 1
    is_decoder: bool = False
    seed: int | None = None  # read by SAT's model-only init; no effect here
    # The official DiffusionTransformer overwrites these from its own params; accepted when equal.
    num_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    parallel_output: bool | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> TransformerArgs:
        """Parse a `transformer_args` mapping (dict or OmegaConf node)."""
        values = dict(config or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown transformer_args key(s) {unknown}; valid keys: {', '.join(sorted(known))}")
        args = cls(**values)
        args._validate()
        return args

    def _validate(self) -> None:
        if self.checkpoint_mode is not None and self.checkpoint_mode not in (*CHECKPOINT_MODES, AUTO):
            raise ValueError(f"transformer_args.checkpoint_mode={self.checkpoint_mode!r}; choose one of {(*CHECKPOINT_MODES, AUTO)}")
        self._validate_budget()
        named_modes = tuple(m for m in COMPILE_MODES if m != "default")
        if not isinstance(self.compile, bool) and self.compile not in named_modes:
            raise ValueError(f"transformer_args.compile must be true, false or {' / '.join(named_modes)}, got {self.compile!r}")
        if self.compile and (self.hidden_dropout or self.attention_dropout):
            raise ValueError("transformer_args.compile needs hidden_dropout and attention_dropout 0 (compiled recomputation does not replay dropout masks here)")
        if self.fp8 is not False and self.fp8 is not True and self.fp8 not in FP8_RECIPES:
            raise ValueError(f"transformer_args.fp8={self.fp8!r}; choose false, true, {' or '.join(FP8_RECIPES)}")
        if not isinstance(self.fp8_base_storage, bool):
            raise ValueError(f"transformer_args.fp8_base_storage must be true or false, got {self.fp8_base_storage!r}")
        if self.fp8_base_storage and self.compile:
            # Measured on an H100 (5B LoRA r128, 49x480x720, full checkpointing): eager 12.1 GiB peak,
            # compiled 53.3 GiB: the compiled layers kept their MLP activations despite checkpointing.
            raise ValueError(
                "transformer_args.fp8_base_storage with compile: true keeps every layer's MLP activations "
                "(53 GiB instead of 12 GiB peak for 5B LoRA on an H100); set compile: false to store the base in FP8"
            )
        if self.fp8_recipe is not None and self.fp8_base_storage:
            raise ValueError(
                "transformer_args.fp8 and fp8_base_storage cannot be combined (FP8 matmuls read bf16 weights); keep one"
            )
        if self.attention_backend not in BACKENDS:
            raise ValueError(f"transformer_args.attention_backend={self.attention_backend!r}; choose one of {BACKENDS}")
        if self.layernorm_order != "pre":
            raise ValueError(f"transformer_args.layernorm_order={self.layernorm_order!r}: CogVideoX uses 'pre' (the only order supported)")
        if self.model_parallel_size != 1:
            raise ValueError("transformer_args.model_parallel_size must be 1: tensor model parallelism is not supported (use data parallelism / ZeRO)")
        if self.is_decoder:
            raise ValueError("transformer_args.is_decoder must be false: the CogVideoX DiT has no cross-attention layers")
        if self.checkpoint_num_layers < 1 or self.checkpoint_skip_layers < 0:
            raise ValueError("transformer_args.checkpoint_num_layers must be >= 1 and checkpoint_skip_layers >= 0")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"transformer_args.{name} must be in [0, 1)")

    def _validate_budget(self) -> None:
        budget = self.checkpoint_budget_gib
        if self.checkpoint_mode != AUTO:
            if budget is not None:
                raise ValueError("transformer_args.checkpoint_budget_gib is only read by checkpoint_mode auto: set checkpoint_mode: auto or remove it")
            return
        if budget is None:
            raise ValueError(
                "transformer_args.checkpoint_mode auto needs transformer_args.checkpoint_budget_gib: the GiB of activations "
                "all layers may keep for backward (e.g. 6.0; weights and optimizer state come on top)"
            )
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
            raise ValueError(f"transformer_args.checkpoint_budget_gib must be a positive number of GiB, got {budget!r}")
        if self.checkpoint_num_layers != 1:
            raise ValueError("transformer_args.checkpoint_mode auto plans each layer alone: set checkpoint_num_layers to 1")

    @property
    def compile_mode(self) -> str | None:
        """The `COMPILE_MODES` name that `compile` means (None: layers run eagerly)."""
        if self.compile is False:
            return None
        return "default" if self.compile is True else self.compile

    @property
    def fp8_recipe(self) -> str | None:
        """torchao's float8 recipe of `fp8` (None: off)."""
        if self.fp8 is False:
            return None
        return "tensorwise" if self.fp8 is True else self.fp8

    @property
    def effective_checkpoint_mode(self) -> str:
        """`none` unless `checkpoint_activations`; then `checkpoint_mode` (default `full`; `auto`
        is planned per layer and input shape by the model)."""
        if not self.checkpoint_activations:
            return "none"
        return self.checkpoint_mode or "full"

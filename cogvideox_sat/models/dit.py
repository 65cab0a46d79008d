"""`DiffusionTransformer`: the CogVideoX DiT, built from the official `network_config`.

Same constructor parameters as the official `dit_video_concat.DiffusionTransformer`, same
mixin names (`pos_embed`, `patch_embed`, `adaln_layer`, `final_layer`, `lora`, `swiglu`) and
state-dict keys, so official configs build unchanged and released checkpoints load strictly.
Variants are chosen by the config, as officially:

| variant   | pos_embed_config                               | other                         |
|-----------|------------------------------------------------|-------------------------------|
| 2B        | Basic3DPositionEmbeddingMixin (sin-cos, 1.875) | patch 2                       |
| 5B        | Rotary3DPositionEmbeddingMixin                 | patch 2                       |
| 5B-I2V    | Rotary3D + learnable_pos_embed                 | in_channels 32 (image concat) |
| 1.5       | Rotary3DPositionEmbeddingMixin                 | patch [2, 2, 2]               |
| 1.5-I2V   | Rotary3DPositionEmbeddingMixin                 | in_channels 32, ofs_embed_dim |
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..distributed import group_size
from ..dtypes import dtype_from_name
from ..parallel.ulysses import SequenceShard, check_sequence_parallel_degree
from ..registry import instantiate_from_config
from .adaln import adaln_block
from .attention import BACKENDS, kernel_context, resolve_backend
from .checkpoint_plan import AUTO, LayerShape, plan_checkpointing
from .checkpointing import compile_options, run_blocks
from .fp8 import convert_projections_to_float8
from .fp8_storage import store_frozen_base_in_float8
from .geometry import TokenGrid, to_patch_size, token_grid
from .swiglu import SwiGLUMixin
from .timestep import SinusoidalTimestep, embedding_mlp, timestep_embedding
from .transformer import Transformer, gelu_tanh
from .transformer_args import CHECKPOINT_MODES, TransformerArgs

if TYPE_CHECKING:
    from ..diffusion.step_cache import StepCache

REQUIRED_MODULES = ("pos_embed_config", "patch_embed_config", "adaln_layer_config", "final_layer_config")
OPTIONAL_MODULES = ("lora_config",)
_INTERPOLATION = ("height_interpolation", "width_interpolation", "time_interpolation")
ALLOW_CPU_FOR_TESTS = False  # tests only: run fp8 / fp8_base_storage on the CPU (runs refuse it)


class DiffusionTransformer(nn.Module):
    """CogVideoX DiT (see module docstring). Input latents are (B, T, C, H, W)."""

    def __init__(
        self,
        transformer_args: Mapping[str, Any],
        num_frames: int,
        time_compressed_rate: int,
        latent_width: int,
        latent_height: int,
        patch_size: int | list[int],
        in_channels: int,
        out_channels: int,
        hidden_size: int,
        num_layers: int,
        num_attention_heads: int,
        elementwise_affine: bool,
        time_embed_dim: int | None = None,
        num_classes: int | str | None = None,
        modules: Mapping[str, Any] | None = None,
        input_time: str = "adaln",
        adm_in_channels: int | None = None,
        parallel_output: bool = True,
        height_interpolation: float = 1.0,
        width_interpolation: float = 1.0,
        time_interpolation: float = 1.0,
        use_SwiGLU: bool = False,
        use_RMSNorm: bool = False,
        ofs_embed_dim: int | None = None,
        dtype: str | torch.dtype = "fp32",
    ):
        super().__init__()
        self.transformer_args = TransformerArgs.from_config(transformer_args)
        self._check_overrides(num_layers, hidden_size, num_attention_heads, parallel_output)
        if ofs_embed_dim is not None and ofs_embed_dim != (time_embed_dim or hidden_size):
            raise ValueError(f"ofs_embed_dim {ofs_embed_dim} must equal time_embed_dim: the ofs embedding is added to it")
        if input_time != "adaln":
            raise ValueError(f"input_time={input_time!r}: only 'adaln' exists in CogVideoX")
        self.patch_size = to_patch_size(patch_size)
        self.num_frames = num_frames
        self.time_compressed_rate = time_compressed_rate
        self.compressed_num_frames = (num_frames - 1) // time_compressed_rate + 1
        self.latent_width, self.latent_height = latent_width, latent_height
        self.in_channels, self.out_channels = in_channels, out_channels
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.elementwise_affine = elementwise_affine
        self.time_embed_dim = time_embed_dim if time_embed_dim is not None else hidden_size
        self.num_classes = num_classes
        self.adm_in_channels = adm_in_channels
        self.ofs_embed_dim = ofs_embed_dim
        self.interpolation = {
            "height_interpolation": height_interpolation,
            "width_interpolation": width_interpolation,
            "time_interpolation": time_interpolation,
        }
        self.dtype = dtype_from_name(dtype)
        self.checkpoint_mode = self.transformer_args.effective_checkpoint_mode
        self.checkpoint_budget_gib = self.transformer_args.checkpoint_budget_gib
        self._checkpoint_plans: dict[LayerShape, tuple[str, ...]] = {}  # checkpoint_mode auto, by input shape
        self.compile_backend = "inductor" if self.transformer_args.compile else None
        self.compile_mode = self.transformer_args.compile_mode or "default"
        self.attention_backend = self.transformer_args.attention_backend
        self.sequence_parallel_group = None  # see set_sequence_parallel

        # 1. Transformer body (SAT key layout) and conditioning embeddings
        self.transformer = Transformer(
            num_layers,
            hidden_size,
            num_attention_heads,
            layernorm_epsilon=self.transformer_args.layernorm_epsilon,
            elementwise_affine=elementwise_affine,
            use_rms_norm=use_RMSNorm,
            activation=nn.functional.silu if use_SwiGLU else gelu_tanh,
            hidden_dropout=self.transformer_args.hidden_dropout,
            attention_dropout=self.transformer_args.attention_dropout,
        )
        self.mixins = nn.ModuleDict()
        self.time_embed = embedding_mlp(hidden_size, self.time_embed_dim)
        if ofs_embed_dim is not None:
            self.ofs_embed = embedding_mlp(ofs_embed_dim, ofs_embed_dim)
        if num_classes is not None:
            self.label_emb = self._label_embedding(num_classes)
        self.initialize_weights()

        # 2. Mixins from `modules` (LoRA last: it wraps the initialised linears)
        self._build_mixins(dict(modules or {}))
        if use_SwiGLU:
            self.add_mixin("swiglu", SwiGLUMixin(num_layers, hidden_size, 4 * hidden_size, bias=False), reinit=True)
        if "lora_config" in (modules or {}):
            lora = instantiate_from_config(modules["lora_config"], layer_num=num_layers)
            self.add_mixin("lora", lora, reinit=True)
        self.set_attention_backend(self.transformer_args.attention_backend)

        # 3. Opt-in FP8 (after LoRA: its frozen base Linears are the ones converted)
        self._apply_fp8_options()

    # ---- construction ------------------------------------------------------------------------
    def _check_overrides(self, num_layers: int, hidden_size: int, heads: int, parallel_output: bool) -> None:
        given = {"num_layers": num_layers, "hidden_size": hidden_size, "num_attention_heads": heads, "parallel_output": parallel_output}
        for name, value in given.items():
            inner = getattr(self.transformer_args, name)
            if inner is not None and inner != value:
                raise ValueError(f"transformer_args.{name}={inner} disagrees with the network's {name}={value}; remove it")

    def _label_embedding(self, num_classes: int | str) -> nn.Module:
        if isinstance(num_classes, int) and not isinstance(num_classes, bool):
            return nn.Embedding(num_classes, self.time_embed_dim)
        if num_classes == "continuous":
            return nn.Linear(1, self.time_embed_dim)
        if num_classes == "timestep":
            return nn.Sequential(SinusoidalTimestep(self.hidden_size), embedding_mlp(self.hidden_size, self.time_embed_dim))
        if num_classes == "sequential":
            if self.adm_in_channels is None:
                raise ValueError("num_classes: sequential needs adm_in_channels")
            return nn.Sequential(embedding_mlp(self.adm_in_channels, self.time_embed_dim))
        raise ValueError(f"num_classes={num_classes!r}: use an int, 'continuous', 'timestep' or 'sequential'")

    def _build_mixins(self, modules: dict[str, Any]) -> None:
        unknown = sorted(set(modules) - set(REQUIRED_MODULES) - set(OPTIONAL_MODULES))
        missing = [m for m in REQUIRED_MODULES if m not in modules]
        if unknown or missing:
            raise ValueError(
                f"network modules: missing {missing}, unknown {unknown}; expected {REQUIRED_MODULES} and optionally {OPTIONAL_MODULES}"
            )
        patch_h, patch_w = self.latent_height // self.patch_size[1], self.latent_width // self.patch_size[2]
        self.add_mixin(
            "pos_embed",
            self._instantiate_pos_embed(modules["pos_embed_config"], height=patch_h, width=patch_w),
        )
        self.add_mixin(
            "patch_embed",
            instantiate_from_config(
                modules["patch_embed_config"], patch_size=self.patch_size, hidden_size=self.hidden_size, in_channels=self.in_channels
            ),
            reinit=True,
        )
        self.add_mixin(
            "adaln_layer",
            instantiate_from_config(
                modules["adaln_layer_config"],
                hidden_size=self.hidden_size,
                num_layers=self.num_layers,
                compressed_num_frames=self.compressed_num_frames,
                hidden_size_head=self.hidden_size // self.num_attention_heads,
                time_embed_dim=self.time_embed_dim,
                elementwise_affine=self.elementwise_affine,
            ),
        )
        self.add_mixin(
            "final_layer",
            instantiate_from_config(
                modules["final_layer_config"],
                hidden_size=self.hidden_size,
                patch_size=self.patch_size,
                out_channels=self.out_channels,
                time_embed_dim=self.time_embed_dim,
                latent_width=self.latent_width,
                latent_height=self.latent_height,
                elementwise_affine=self.elementwise_affine,
            ),
            reinit=True,
        )

    def _instantiate_pos_embed(self, config: Mapping[str, Any], height: int, width: int) -> nn.Module:
        """The official code passes the network's interpolation values to the position mixin, and
        2B YAMLs also set them in the mixin's own params (the official code then fails). Both
        forms work here: a value in the mixin's params wins; a conflicting non-default network
        value raises."""
        params = dict(config.get("params", None) or {})
        for name in _INTERPOLATION:
            network_value = self.interpolation[name]
            if name in params and network_value != 1.0 and float(params[name]) != network_value:
                raise ValueError(
                    f"{name} is {network_value} in the network params but {params[name]} in pos_embed_config; keep one"
                )
            params.setdefault(name, network_value)
            self.interpolation[name] = float(params[name])
        return instantiate_from_config(
            {"target": config["target"], "params": params},
            height=height,
            width=width,
            compressed_num_frames=self.compressed_num_frames,
            hidden_size=self.hidden_size,
        )

    def _apply_fp8_options(self) -> None:
        """`transformer_args.fp8`: projections through torchao's FP8 matmuls (bf16 models only:
        fp32 and fp16 are the official-parity path); `fp8_base_storage`: LoRA's frozen base kept
        in float8. Both keep the state-dict keys."""
        args = self.transformer_args
        if args.fp8_recipe is not None:
            if self.dtype != torch.bfloat16:
                raise ValueError(
                    f"transformer_args.fp8 needs the bf16 model (dtype bf16, args.bf16: true); this one is "
                    f"{str(self.dtype).replace('torch.', '')}, the exact official-parity path: remove transformer_args.fp8 or train in bf16"
                )
            convert_projections_to_float8(self.transformer, args.fp8_recipe)
        if args.fp8_base_storage:
            store_frozen_base_in_float8(self)

    def initialize_weights(self) -> None:
        """SAT's init of the transformer body; everything else keeps nn.Linear's default init
        except what the mixins' `reinit` sets (patch and output projections, LoRA).

        - query_key_value, dense_h_to_4h: N(0, 0.02); attention.dense, dense_4h_to_h (residual
          outputs): N(0, 0.02 / sqrt(2 num_layers)); all their biases zero.
        - LayerNorms: weight 1, bias 0 (torch default).
        - `transformer_args.skip_init: true` keeps torch's default init (weights to be loaded).
        """
        if self.transformer_args.skip_init:
            return
        std, out_std = 0.02, 0.02 / math.sqrt(2.0 * self.num_layers)
        for layer in self.transformer.layers:
            for linear, s in (
                (layer.attention.query_key_value, std),
                (layer.mlp.dense_h_to_4h, std),
                (layer.attention.dense, out_std),
                (layer.mlp.dense_4h_to_h, out_std),
            ):
                nn.init.normal_(linear.weight, mean=0.0, std=s)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)

    # ---- SAT BaseModel API -------------------------------------------------------------------
    def add_mixin(self, name: str, mixin: nn.Module, reinit: bool = False) -> None:
        """Register `mixin` as `mixins.<name>`, give it `.transformer`, optionally `reinit` it."""
        if name in self.mixins:
            raise ValueError(f"mixin {name!r} already exists")
        self.mixins[name] = mixin
        object.__setattr__(mixin, "transformer", self.transformer)
        if getattr(mixin, "legacy_position_table", False) and not hasattr(self.transformer, "position_embeddings"):
            self.transformer.add_legacy_position_table(self.transformer_args.max_sequence_length)
        if reinit:
            mixin.reinit(self)

    def get_mixin(self, name: str) -> nn.Module:
        return self.mixins[name]

    def del_mixin(self, name: str) -> None:
        del self.mixins[name]

    def reset_derived_buffers(self) -> None:
        """Recompute tables that are derived, not learnt (after building on the meta device
        and `to_empty`); loaded weights are untouched except the 2B sin-cos table."""
        for mixin in self.mixins.values():
            if hasattr(mixin, "reset_buffers"):
                mixin.reset_buffers()

    # ---- runtime switches --------------------------------------------------------------------
    def set_checkpoint_mode(self, mode: str, budget_gib: float | None = None) -> None:
        """Activation checkpointing: one of `CHECKPOINT_MODES` (see `checkpointing`), or `auto`
        with a budget of kept activations in GiB (default transformer_args.checkpoint_budget_gib)."""
        if mode not in (*CHECKPOINT_MODES, AUTO):
            raise ValueError(f"checkpoint mode {mode!r}: choose one of {(*CHECKPOINT_MODES, AUTO)}")
        budget_gib = budget_gib if budget_gib is not None else self.transformer_args.checkpoint_budget_gib
        if mode == AUTO and budget_gib is None:
            raise ValueError("checkpoint mode auto needs a budget: pass budget_gib (GiB of kept activations)")
        self.checkpoint_mode, self.checkpoint_budget_gib = mode, budget_gib
        self._checkpoint_plans.clear()

    def set_attention_backend(self, backend: str) -> None:
        """SDPA kernel choice for every layer (see `cogvideox_sat.models.attention.BACKENDS`)."""
        if backend not in BACKENDS:
            raise ValueError(f"attention backend {backend!r}: choose one of {BACKENDS}")
        self.attention_backend = backend
        for layer in self.transformer.layers:
            layer.attention.backend = backend

    def set_compile(self, enabled: bool, backend: str = "inductor", mode: str = "default") -> None:
        """Run each layer through `torch.compile` with `backend` in `mode`, a
        `checkpointing.COMPILE_MODES` name (transformer_args.compile uses inductor; tests use
        aot_eager). The SDPA kernel of compiled layers is chosen when they are first traced:
        call `torch._dynamo.reset()` after changing the attention backend of a model that already
        ran compiled."""
        if enabled and self.transformer_args.fp8_base_storage and backend == "inductor":
            raise ValueError(
                "transformer_args.fp8_base_storage cannot run compiled: the inductor-compiled layers keep every layer's "
                "MLP activations (53 GiB instead of 12 GiB peak for 5B LoRA on an H100); leave compile off"
            )
        if enabled:
            compile_options(backend, mode)  # an unknown mode, or one the backend lacks, fails here
        self.compile_backend = backend if enabled else None
        self.compile_mode = mode

    def set_sequence_parallel(self, group: Any) -> None:
        """Ulysses sequence parallelism over the process group `group` (None: off).

        Each rank of the group runs the layers on its slice of the tokens and attends with
        num_attention_heads / group size heads; all ranks must pass identical inputs and get the
        whole output (`cogvideox_sat.parallel.ulysses` explains the gradient convention).
        """
        check_sequence_parallel_degree(self.num_attention_heads, group_size(group))
        self.sequence_parallel_group = group if group_size(group) > 1 else None

    # ---- forward -----------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        concat_images: torch.Tensor | None = None,
        ofs: torch.Tensor | None = None,
        idx: torch.Tensor | None = None,
        scale_emb: Any = None,
        step_cache: StepCache | None = None,
    ) -> torch.Tensor:
        """Predict for latents `x` (B, T, C, H, W) -> (B, T, out_channels, H, W).

        `timesteps` (B,) and `context` (B, L, text_hidden) as the official denoiser passes them;
        `concat_images` (B or B/k, T, C', H, W) is appended on channels (image-to-video; a
        smaller batch is tiled, as for classifier-free guidance); `ofs` (B or 1,) is the 1.5 I2V
        offset (the official sampler uses 2.0); `y` is the class label when `num_classes` is set.
        `idx` and `scale_emb` are passed by the official loss/samplers and not used.
        `step_cache` (sampling only) may skip the blocks after the first (`diffusion.step_cache`).
        """
        if timesteps is None or context is None:
            raise ValueError("DiffusionTransformer needs timesteps and context")
        self._check_fp8_device(x.device)
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass y if and only if the model is class-conditional (num_classes)")

        # 1. Inputs in the compute dtype; image latents appended on channels
        x = x.to(self.dtype)
        context = context.to(self.dtype)
        if concat_images is not None:
            x = torch.cat((x, _tile_batch(concat_images.to(self.dtype), x.shape[0])), dim=2)
        if x.shape[2] != self.in_channels:
            raise ValueError(f"latents have {x.shape[2]} channels, the model takes in_channels={self.in_channels}")
        grid = token_grid(x.shape, self.patch_size, text_length=context.shape[1])

        # 2. Conditioning vector (B, time_embed_dim): timestep (+ class label) (+ ofs)
        emb = self.time_embed(timestep_embedding(timesteps, self.hidden_size, dtype=self.dtype))
        if self.num_classes is not None:
            y = y.repeat_interleave(x.shape[0] // y.shape[0], dim=0)
            emb = emb + self.label_emb(y)
        if self.ofs_embed_dim is not None:
            if ofs is None:
                raise ValueError("this model has ofs_embed_dim: pass ofs (the official sampler uses ofs=2.0)")
            emb = emb + self.ofs_embed(timestep_embedding(ofs, self.ofs_embed_dim, dtype=self.dtype))

        # 3. Token sequence [text; image patches] (B, L + N, hidden) plus absolute positions
        hidden = self.mixins["patch_embed"](x, context, grid)
        positions = self.mixins["pos_embed"].position_table(grid)
        if positions is not None:
            hidden = hidden + positions.to(hidden.dtype)
        hidden = self.transformer.embedding_dropout(hidden)

        # 4. Transformer layers (RoPE, when configured, inside attention); with sequence
        #    parallelism on this rank's slice of the tokens, then gathered whole again
        shard = None
        if self.sequence_parallel_group is not None:
            shard = SequenceShard.split(hidden.shape[1], self.sequence_parallel_group)
        hidden = self._run_layers(hidden, emb, grid, shard, step_cache)

        # 5. Final LayerNorm on all tokens, output head on image tokens, unpatchify
        hidden = self.transformer.final_layernorm(hidden)
        return self.mixins["final_layer"](hidden, emb, grid)

    def _check_fp8_device(self, device: torch.device) -> None:
        args = self.transformer_args
        if (args.fp8_recipe is not None or args.fp8_base_storage) and device.type != "cuda" and not ALLOW_CPU_FOR_TESTS:
            key = "fp8" if args.fp8_recipe is not None else "fp8_base_storage"
            raise ValueError(f"transformer_args.{key} needs a CUDA GPU (this model runs on {device.type}): remove it for CPU runs")

    def _run_layers(
        self,
        hidden: torch.Tensor,
        emb: torch.Tensor,
        grid: TokenGrid,
        shard: SequenceShard | None = None,
        step_cache: StepCache | None = None,
    ) -> torch.Tensor:
        adaln = self.mixins["adaln_layer"]
        rotary = self.mixins["pos_embed"].rotary(grid)
        swiglu = self.mixins["swiglu"].w2 if "swiglu" in self.mixins else None
        text_length = grid.text_length
        if shard is not None:
            hidden, text_length = shard.scatter(hidden), shard.count_in(0, grid.text_length)

        blocks = [adaln.block_modules(i, swiglu[i] if swiglu is not None else None) for i in range(self.num_layers)]
        compile_backend = self.compile_backend
        if shard is not None and compile_backend is not None:  # its all-to-all is not traceable here
            warnings.warn("transformer_args.compile is ignored under sequence parallelism: layers run eagerly", stacklevel=2)
            compile_backend = None
        compiled = compile_backend is not None
        # the attention kernel, chosen here (eagerly) and handed to the layers as a plain string
        dropout = self.transformer_args.attention_dropout if self.training else 0.0
        kernel = resolve_backend(self.attention_backend, hidden.device, hidden.dtype, self.hidden_size // self.num_attention_heads, dropout)
        run = partial(
            run_blocks,
            adaln_block,
            shared=(emb, text_length, rotary, shard, kernel),
            mode=self._layer_checkpoint_modes(hidden, shard),
            chunk=self.transformer_args.checkpoint_num_layers,
            skip_last=self.transformer_args.checkpoint_skip_layers,
            hidden_size=self.hidden_size,
            compile_backend=compile_backend,
            compile_mode=self.compile_mode,
        )
        with kernel_context(kernel, hidden.device) if compiled else contextlib.nullcontext():
            if step_cache is None:
                hidden = run(blocks, hidden)
            elif shard is not None:
                raise ValueError("sampler_config.params.step_cache_threshold is not supported with sequence parallelism: remove it")
            else:
                hidden = step_cache.run(hidden, partial(_run_some, run, blocks[:1]), partial(_run_some, run, blocks[1:]))
        return shard.gather(hidden) if shard is not None else hidden

    def _layer_checkpoint_modes(self, hidden: torch.Tensor, shard: SequenceShard | None) -> str | tuple[str, ...]:
        """`checkpoint_mode`, or under `auto` this input shape's plan (made once per shape, one log line)."""
        if self.checkpoint_mode != AUTO:
            return self.checkpoint_mode
        if not torch.is_grad_enabled():
            return "none"  # nothing is checkpointed without autograd: plan training shapes only
        seq_len, shards = (shard.total, len(shard.sizes)) if shard is not None else (hidden.shape[1], 1)
        shape = LayerShape(self.hidden_size, self.num_attention_heads, hidden.shape[0], seq_len, hidden.element_size(), "lora" in self.mixins, shards)
        if shape not in self._checkpoint_plans:
            plan = plan_checkpointing(shape, self.num_layers, self.checkpoint_budget_gib, self.transformer_args.checkpoint_skip_layers)
            if plan.fits:
                print(plan.summary(shape, self.checkpoint_budget_gib), flush=True)
            else:
                warnings.warn(plan.summary(shape, self.checkpoint_budget_gib), stacklevel=2)
            self._checkpoint_plans[shape] = plan.modes
        return self._checkpoint_plans[shape]


def _run_some(run: Any, blocks: list[Any], hidden: torch.Tensor) -> torch.Tensor:
    return run(blocks, hidden)


def _tile_batch(images: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a (b, ...) tensor to `batch` rows when b divides it (official CFG doubling)."""
    if images.shape[0] == batch:
        return images
    if batch % images.shape[0]:
        raise ValueError(f"concat_images batch {images.shape[0]} does not divide the latent batch {batch}")
    return images.repeat(batch // images.shape[0], *([1] * (images.dim() - 1)))

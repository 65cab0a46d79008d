"""What every config key does here: the one table of declared behaviour.

Each key of the `args:` section (every `RunArgs` field), of the `model:` section, of the
`deepspeed:` and `data:` sections has one entry:

- `acts`: it does what the official code does with it (`does` says how, when it differs);
- `warn`: accepted for compatibility, has no effect here; a run that sets it (to anything but a
  `neutral` value) prints one warning naming the key and what acts instead;
- `error`: ignoring it would change results; setting it to anything but a `neutral` value is a
  config error with the fix.

Parameters inside a target block (`*_config.params.*`) are constructor arguments of that target,
checked against its signature by `config.targets`; the few that construct nothing are listed in
`TARGET_PARAMS`. The DiT's `network_config.params.transformer_args` mapping has its own table,
`TRANSFORMER_ARGS` (one entry per `models.transformer_args.TransformerArgs` field; that class
raises for the error entries). `rules.declared_key_behaviour` turns the table into warnings and errors; the
README's key table is generated from it (`key_table_markdown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["acts", "warn", "error"]


@dataclass(frozen=True)
class KeyBehaviour:
    does: str
    kind: Kind = "acts"
    neutral: tuple[Any, ...] = ()  # values under which a warn/error key changes nothing


def _acts(does: str = "as officially") -> KeyBehaviour:
    return KeyBehaviour(does)


def _warn(instead: str, neutral: tuple[Any, ...] = ()) -> KeyBehaviour:
    return KeyBehaviour(instead, "warn", neutral)


def _error(fix: str, neutral: tuple[Any, ...] = ()) -> KeyBehaviour:
    return KeyBehaviour(fix, "error", neutral)


_CKPT = "overrides model.network_config.params.transformer_args.{} (our activation checkpointing: chunks of checkpoint_num_layers layers, the last checkpoint_skip_layers layers not checkpointed)"

ARGS: dict[str, KeyBehaviour] = {
    # model
    "base": _acts("config files, merged in order"),
    "model_parallel_size": _acts("model-parallel group size (sequence / VAE context parallelism)"),
    "force_pretrain": _warn("nothing: weights load whenever args.load is set", (False,)),
    "device": _acts("-1: LOCAL_RANK's GPU; cpu without GPUs"),
    "debug": _warn("nothing (the official flag only adds prints)", (False,)),
    "log_image": _warn("nothing: validation samples follow eval_interval and only_log_video_latents", (True,)),
    # sampling
    "output_dir": _acts(), "input_type": _acts(), "input_file": _acts(),
    "input_dir": _warn("nothing: prompts come from input_file (txt) or stdin (cli)", (None,)),
    "sampling_image_size": _acts(), "sampling_num_frames": _acts(), "sampling_fps": _acts(),
    "final_size": _warn("nothing: videos keep sampling_image_size (unused officially too)", (2048,)),
    "sdedit": _warn("nothing: sampling starts from noise (unused officially too)", (False,)),
    "grid_num_rows": _warn("nothing: one video per prompt (unused officially too)", (1,)),
    "force_inference": _acts("tolerate missing/unexpected keys in args.load"),
    "lcm_steps": _warn("nothing: the sampler's num_steps sets the steps (unused officially too)", (None,)),
    "only_save_latents": _acts(), "only_log_video_latents": _acts(), "latent_channels": _acts(), "image2video": _acts(),
    # training
    "experiment_name": _acts("run folder <save>/<experiment_name>-<date>-<time>-<4 hex>"),
    "train_iters": _acts(), "batch_size": _acts("micro batch; deepspeed.train_micro_batch_size_per_gpu wins"),
    "lr": _acts("deepspeed.optimizer.params.lr wins"), "mode": _acts(), "seed": _acts("+ data-parallel rank per process"),
    "zero_stage": _acts("must equal deepspeed.zero_optimization.stage"),
    "checkpoint_activations": _acts(_CKPT.format("checkpoint_activations")),
    "checkpoint_num_layers": _acts(_CKPT.format("checkpoint_num_layers")),
    "checkpoint_skip_layers": _acts(_CKPT.format("checkpoint_skip_layers")),
    "fp16": _acts("must agree with deepspeed.fp16.enabled"), "bf16": _acts("must agree with deepspeed.bf16.enabled"),
    "gradient_accumulation_steps": _acts("deepspeed.gradient_accumulation_steps wins"),
    "profiling": _warn("nothing: profile with benchmarks/profile_step.py", (-1,)),
    "epochs": _acts(), "log_interval": _acts("metrics.jsonl, TensorBoard, wandb"),
    "summary_dir": _warn("nothing: TensorBoard logs go to <run>/tensorboard", ("",)),
    "save_args": _warn("nothing: <run>/training_config.yaml is always written", (False,)),
    "lr_decay_iters": _acts(), "lr_decay_style": _acts(), "lr_decay_ratio": _acts(), "warmup": _acts(),
    "weight_decay": _acts("deepspeed.optimizer.params.weight_decay wins"),
    "save": _acts(), "load": _acts(), "force_train": _acts("tolerate missing/unexpected keys in args.load"),
    "save_interval": _acts(),
    "no_save_rng": _warn("nothing: RNG states are always saved (exact resume needs them)", (False,)),
    "no_load_rng": _acts("on resume, random generators are reseeded instead of restored"),
    "resume_dataloader": _warn("nothing: --resume always continues the data position; mode: finetune starts it at 0", (False,)),
    "distributed_backend": _warn("nothing: nccl on GPUs, gloo on CPU, chosen automatically", ("nccl",)),
    "local_rank": _acts(), "exit_interval": _acts(), "wandb": _acts(), "wandb_project_name": _acts(),
    # evaluation
    "eval_batch_size": _acts(), "eval_iters": _acts(), "eval_interval": _acts(),
    "strict_eval": _warn("nothing: validation runs eval_iters batches from valid_data", (False,)),
    # data
    "train_data": _acts(), "valid_data": _acts(),
    "train_data_weights": _acts(
        "one weight per train_data dataset, as SAT: a folder's samples repeated w times per epoch; shards drawn with probability w / sum"
    ),
    "iterable_dataset": _warn("nothing: the data target decides (cogvideox_sat.data.WebDataset streams shards)", (False,)),
    "iterable_dataset_eval": _warn("nothing: valid_data uses the same data target as train_data", ("",)),
    "batch_from_same_dataset": _error("not implemented: batches mix train_data folders; remove it", (False,)),
    "test_data": _warn("nothing: there is no test pass; use valid_data", (None,)),
    "split": _acts(
        "SAT's blocked random split of each train_data folder into train/valid/test (valid part validates unless valid_data); default 1,0,0 (SAT's 1000,1,1)"
    ),
    "num_workers": _acts(), "prefetch_factor": _acts("batches each loader worker prepares ahead (num_workers > 0)"),
    "block_size": _acts("the block of split (at most the smallest train_data folder)"),
    # deepspeed
    "deepspeed": _acts("always on for training"), "deepspeed_config": _acts("filled from the deepspeed: section"),
    # ours
    "resume": _acts("exact resume of a run folder"), "keep_last_checkpoints": _acts(), "save_frozen_weights": _acts(),
    "max_nonfinite_steps": _acts("stop after this many non-finite losses in a row (fp16 overflow skips apart)"),
    "save_on_signal": _acts("SIGTERM/SIGINT/SIGUSR1: every rank saves this iteration, exit 75"), "sequence_parallel": _acts(), "lora_load": _acts(), "lora_merge": _acts(),
    "ema": _acts("sampling/tools: use <latest>-ema"), "official_decode": _acts(), "decode_chunk_frames": _acts(),
    "train_frame_rule": _acts(),
    "id_token": _acts("ours (as diffusers' --id_token): in front of every training caption and of validation/sampling prompts lacking it; sampling reads the run's"),
}

MODEL: dict[str, KeyBehaviour] = {
    "log_keys": _warn("nothing: validation logs the prompts of its batch", ()),
    "input_key": _acts(), "network_config": _acts(), "network_wrapper": _acts(), "denoiser_config": _acts(),
    "sampler_config": _acts(), "conditioner_config": _acts(), "first_stage_config": _acts(), "loss_fn_config": _acts(),
    "scale_factor": _acts(), "latent_input": _acts(),
    "disable_first_stage_autocast": _acts("the VAE runs in its own precision"),
    "not_trainable_prefixes": _acts(), "compile_model": _acts(), "en_and_decode_n_samples_a_time": _acts(),
    "lr_scale": _error("not supported (the official path cannot run it): remove model.lr_scale", (None,)),
    "lora_train": _acts(),
    "use_pd": _warn("nothing (unused officially too)", (False,)),
    "noised_image_input": _acts(), "noised_image_all_concat": _acts(), "noised_image_dropout": _acts(),
    "augmentation_dropout": _warn("nothing (unused officially too): noised_image_dropout drops the image condition", (None,)),
    "pad_latent_frames": _acts("ours: repeat the first latent frame for an even count"),
}

DATA: dict[str, KeyBehaviour] = {"target": _acts("the dataset class"), "params": _acts("its constructor arguments")}

_FP16_TOP = _warn("nothing at the top level (DeepSpeed reads it under deepspeed.fp16)")
DEEPSPEED_TOP_LEVEL_FP16 = ("loss_scale", "loss_scale_window", "hysteresis", "min_loss_scale")


def deepspeed_behaviour(key: str) -> KeyBehaviour:
    """Top-level `deepspeed:` keys: DeepSpeed's own, acting in DeepSpeed; the official sft.yaml's
    misplaced fp16 keys warn (see rules.ignored_loss_scale_keys)."""
    if key in DEEPSPEED_TOP_LEVEL_FP16:
        return _FP16_TOP
    from cogvideox_sat.config.schema import DeepSpeedSection

    if key in DeepSpeedSection.model_fields:
        if key == "optimizer":
            return _acts("AdamW; sat.ops.FusedEmaAdam = AdamW + our EMA (<n>-ema saved with every checkpoint)")
        return _acts("DeepSpeed")
    raise KeyError(key)


# constructor params of target blocks that construct nothing (by the block's final key name)
TARGET_PARAMS: dict[str, KeyBehaviour] = {
    "loss_fn_config.params.block_scale": _warn("nothing (unused officially too)", (None,)),
    "loss_fn_config.params.block_size": _warn("nothing (unused officially too)", (None,)),
}


# model.network_config.params.transformer_args.*
_TA_OVERRIDE = "must equal the network's own parameter of that name (the official DiT overwrites it)"
TRANSFORMER_ARGS: dict[str, KeyBehaviour] = {
    "checkpoint_activations": _acts("activation checkpointing of the transformer layers (checkpoint_mode says how)"),
    "checkpoint_num_layers": _acts("layers per checkpointed chunk (1 under checkpoint_mode auto)"),
    "checkpoint_skip_layers": _acts("the last this many layers are not checkpointed"),
    "checkpoint_mode": _acts("ours: full (default) / selective / selective_mlp_out / selective_matmul / none / auto (per layer, from checkpoint_budget_gib)"),
    "checkpoint_budget_gib": _acts(
        "ours, checkpoint_mode auto only (and required there): GiB of activations all layers may keep for backward at the step's input shape; weights, gradients and optimizer state come on top"
    ),
    "attention_backend": _acts("ours: auto / fa4 / torch / cudnn / flash / efficient / math"),
    "compile": _acts("ours: each layer through torch.compile (true, or max-autotune: Triton matmuls with fused epilogues where faster)"),
    "fp8": _acts("ours: FP8 projection matmuls (bf16 models on CUDA)"),
    "fp8_base_storage": _acts("ours: LoRA's frozen base weights stored in float8 (CUDA)"),
    "vocab_size": _warn("nothing: the patch embedding replaces SAT's word embeddings", (1,)),
    "max_sequence_length": _acts("rows of the 2B's unused transformer.position_embeddings (a state-dict key)"),
    "layernorm_order": _error("must be 'pre', CogVideoX's only order", ("pre",)),
    "layernorm_epsilon": _acts(), "hidden_dropout": _acts(), "attention_dropout": _acts(),
    "skip_init": _acts("true keeps torch's default init (weights to be loaded)"),
    "model_parallel_size": _error("must be 1: no tensor model parallelism (use data parallelism / ZeRO)", (1,)),
    "is_decoder": _error("must be false: the CogVideoX DiT has no cross-attention layers", (False,)),
    "seed": _warn("nothing: args.seed seeds the run", (None,)),
    "num_layers": _acts(_TA_OVERRIDE), "hidden_size": _acts(_TA_OVERRIDE),
    "num_attention_heads": _acts(_TA_OVERRIDE), "parallel_output": _acts(_TA_OVERRIDE),
}
TRANSFORMER_ARGS_PATH = "model.network_config.params.transformer_args"


def behaviour(path: str) -> KeyBehaviour:
    """The declared behaviour of a dotted key path (list indices dropped), e.g. `args.split`,
    `model.use_pd`, `model.loss_fn_config.params.block_size`. KeyError when none is declared."""
    section, _, rest = path.partition(".")
    if not rest:
        if section in ("model", "args", "deepspeed", "data"):
            return _acts("section")
        raise KeyError(path)
    head = rest.split(".", 1)[0]
    if section == "args" and "." not in rest:
        return ARGS[rest]
    if section == "deepspeed":
        return deepspeed_behaviour(head)
    if section == "data":
        return DATA[head]
    if section == "model":
        if "." not in rest:
            return MODEL[rest]
        if path.startswith(TRANSFORMER_ARGS_PATH + "."):
            return TRANSFORMER_ARGS[path[len(TRANSFORMER_ARGS_PATH) + 1 :]]
        for suffix, declared in TARGET_PARAMS.items():
            if rest.endswith(suffix):
                return declared
        MODEL[head]  # the block itself must be a declared model key
        return _acts("a target block: `target` names the class, `params` are checked against its constructor")
    raise KeyError(path)


def key_table_markdown() -> str:
    """The README table of `args:`, `model:` and `transformer_args` keys."""
    rows = ["| key | here |", "|---|---|"]
    for prefix, table in (("args", ARGS), ("model", MODEL), ("transformer_args", TRANSFORMER_ARGS)):
        for key, b in table.items():
            mark = {"acts": "acts", "warn": "warning, no effect", "error": "error"}[b.kind]
            rows.append(f"| `{prefix}.{key}` | {mark}: {b.does} |")
    return "\n".join(rows)

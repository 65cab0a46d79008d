"""`train(args)`: build data, engine and DeepSpeed from validated args, then run the loop.

Replaces SwissArmyTransformer's `training_main` (see the README for what it gets wrong): exact
resume (optimizer, LR schedule, RNG, data position), atomic checkpoints, CPU support, a LR that
never goes negative, unique run folders.
"""

from __future__ import annotations

import argparse
import copy
import secrets
import time
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from cogvideox_sat import distributed
from cogvideox_sat.dtypes import precision_from_flags
from cogvideox_sat.io.run_folder import TRAINING_CONFIG
from cogvideox_sat.media import MP4_NEEDS, mp4_writer_available
from cogvideox_sat.registry import allow_any_target
from cogvideox_sat.training.checkpoint import MODEL_STATES, choose_resume_tag, resume_checkpoint
from cogvideox_sat.training.data import BatchStream, build_loader, build_training_data
from cogvideox_sat.training.ema import WeightEma, adam_params, ema_settings, ema_tag, has_ema
from cogvideox_sat.training.hyperparams import group_settings, restore_settings
from cogvideox_sat.training.loop import LoopConfig, LoopState, run_loop
from cogvideox_sat.training.metrics import MetricsLogger
from cogvideox_sat.training.preemption import SignalWatch, ignore_stop_signals
from cogvideox_sat.training.reshard import data_position, prepare_resume, reseed_rank, restore_rank_rng
from cogvideox_sat.training.rng import seed_everything
from cogvideox_sat.training.schedule import LRSchedule, build_scheduler
from cogvideox_sat.training.setup import RunPlacement, init_distributed
from cogvideox_sat.training.weights import is_our_training_run, load_transformer


def resolve_run_dir(args: argparse.Namespace) -> tuple[Path, Optional[Path]]:
    """(folder this run writes to, folder to resume from or None).

    `args.resume`, or SAT's "mode: pretrain + load = continue training" with a folder of ours,
    continue in that folder. Otherwise a new `<save>/<experiment_name>-<date>-<time>-<4 hex>`
    folder (SAT's minute-resolution names collide when two runs start in one minute).
    """
    if args.resume:
        return Path(args.resume), Path(args.resume)
    if args.mode == "pretrain" and args.load and is_our_training_run(args.load):
        return Path(args.load), Path(args.load)
    name = f"{args.experiment_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return Path(args.save or "runs") / distributed.broadcast_object(name), None


def optimizer_config(ds_config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """DeepSpeed's config with the optimizer made runnable here.

    The official sft.yaml names `sat.ops.FusedEmaAdam` (AdamW + an EMA of the weights), whose
    kernel needs SAT's CUDA build: DeepSpeed's AdamW runs the update with the same
    hyper-parameters and `training.ema.WeightEma` keeps the EMA (its params are taken out here).
    On CPU DeepSpeed's fused Adam cannot run, so torch's AdamW is used (`torch_adam`).
    """
    cfg = copy.deepcopy(ds_config)
    opt = cfg.setdefault("optimizer", {"type": "AdamW", "params": {}})
    if has_ema(opt):
        print(f"optimizer {opt['type']} -> DeepSpeed AdamW with the same parameters + our EMA of the weights", flush=True)
        opt["type"], opt["params"] = "AdamW", adam_params(opt.get("params") or {})
    elif str(opt.get("type", "")).startswith("sat."):
        print(f"optimizer {opt['type']} -> DeepSpeed AdamW with the same parameters", flush=True)
        opt["type"] = "AdamW"
    if device.type != "cuda" and opt["type"].lower() in ("adam", "adamw"):
        opt.setdefault("params", {})["torch_adam"] = True
    return cfg


def start_ema(ds_engine: Any, ds_config: dict[str, Any], resume_from: Optional[Path], tag: Optional[str]) -> Optional[WeightEma]:
    """The EMA of `deepspeed.optimizer` (None without one): from the weights the run starts from,
    or, on resume, the shadow and step count saved beside the checkpoint."""
    settings = ema_settings(ds_config.get("optimizer"))
    if settings is None:
        return None
    ema = WeightEma(ds_engine.module, settings)
    if resume_from is not None and tag is not None:
        path = resume_from / ema_tag(tag) / MODEL_STATES
        if path.is_file():
            ema.load(path)
        else:
            print(f"warning: {path} does not exist (the checkpoint was saved without EMA): the EMA restarts from the resumed weights", flush=True)
    return ema


def param_groups(module: torch.nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters; biases and norm/scale vectors get no weight decay."""
    decay, no_decay = [], []
    for _, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def exclude_frozen_modules_from_state_dict(engine: torch.nn.Module) -> None:
    """Keep the frozen VAE and T5 out of every checkpoint DeepSpeed writes.

    DeepSpeed's `exclude_frozen_parameters` drops frozen parameters by name, but T5's tied
    embedding also appears under a second name (`encoder.embed_tokens.weight`, 131M values for
    T5-XXL), and buffers are never dropped; removing the whole sub-modules catches both.
    """
    prefixes = tuple(engine.frozen_module_prefixes())

    def drop(module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        for key in [k for k in state_dict if k[len(prefix):].startswith(prefixes)]:
            del state_dict[key]

    engine.register_state_dict_post_hook(drop)


def hide_frozen_modules_from_zero3(engine: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """ZeRO-3 partitions every parameter of the module it wraps, and a partitioned weight read
    outside its own module's forward (as the VAE's per-frame convolutions do) is an empty
    placeholder. The frozen VAE and T5 gain nothing from partitioning: keep them as plain
    attributes DeepSpeed does not see, placed and cast by hand.
    """
    for name in ("first_stage_model", "conditioner"):
        prefix = f"{name}."
        if prefix not in engine.frozen_module_prefixes():
            continue
        module = engine._modules.pop(name)
        module.to(device=device, dtype=dtype)
        object.__setattr__(engine, name, module)


def build_engine(args: argparse.Namespace, resume_from: Optional[Path]) -> torch.nn.Module:
    from cogvideox_sat.engine import SATVideoDiffusionEngine

    with allow_any_target(getattr(args, "allow_any_target", False)):
        engine = SATVideoDiffusionEngine(args)
    # a resumed run's checkpoints hold the trainable tensors only: the frozen base (e.g. under LoRA)
    # still comes from args.load, unless args.load is that run itself
    if args.load and (resume_from is None or Path(args.load).resolve() != Path(resume_from).resolve()):
        report = load_transformer(engine, args.load, lenient=args.force_train)
        print(report.summary(), flush=True)
        if getattr(args, "lora_load", None):  # continue training these adapters on that base
            from cogvideox_sat.sampling.weights import load_lora

            print(load_lora(engine, args.lora_load).summary(), flush=True)
    engine.disable_untrainable_params()
    if not args.save_frozen_weights:
        exclude_frozen_modules_from_state_dict(engine)
    return engine


def enable_sequence_parallel(engine: torch.nn.Module) -> None:
    """Ulysses sequence parallelism of the DiT over the model-parallel group (`args.sequence_parallel`).

    The group's ranks share one data-parallel rank (same batches, same seed) and the engine
    broadcasts the noise draw across the group, so they feed the DiT identical inputs, as Ulysses
    needs. DeepSpeed, given no model-parallel unit, averages gradients over all ranks, which turns
    the per-rank partial gradients into the single-GPU gradient (see cogvideox_sat.parallel.ulysses).
    """
    engine.diffusion_model.set_sequence_parallel(distributed.get_model_parallel_group())


def check_latent_cache(dataset: Any, args: argparse.Namespace, engine: torch.nn.Module) -> None:
    """A dataset reading precomputed latents must match this run's VAE and T5 weights (each
    dataset of a mixed or split one)."""
    from cogvideox_sat.data.mixing import leaves

    for leaf in leaves(dataset):
        _check_one_latent_cache(leaf, args, engine)


def _check_one_latent_cache(dataset: Any, args: argparse.Namespace, engine: torch.nn.Module) -> None:
    cache = getattr(dataset, "latent_cache", None)
    if cache is None:
        return
    from cogvideox_sat.data.encoders import check_cache_matches_model

    vae_params = args.model_config.first_stage_config.get("params", {})
    check_cache_matches_model(cache, args.model_config, first_stage=None if vae_params.get("ckpt_path") else engine.first_stage_model)
    if getattr(engine, "latent_input", False) and getattr(engine, "noised_image_input", False) and not dataset.caches_first_frames():
        # image-to-video encodes the noised first frame every step: say so before any step runs
        raise ValueError(
            f"latent cache '{cache.root}' has no first frames, which image-to-video training needs "
            "(model.noised_image_input with model.latent_input): rebuild the cache with "
            "tools/build_latent_cache.py for this I2V config"
        )


def train(args: argparse.Namespace) -> LoopState:
    """Train; with `args.save_on_signal`, a stop signal saves and raises `StoppedOnSignal`.

    Data-loader workers ignore the stop signals (a scheduler signals the whole process group;
    a worker dying of it would end the run before its parent saves).
    """
    with SignalWatch(enabled=args.save_on_signal) as signals:
        return _train(args, signals)


def _train(args: argparse.Namespace, signals: SignalWatch) -> LoopState:
    placement: RunPlacement = init_distributed(args)
    # model init is broadcast from rank 0 by DeepSpeed; per-rank seeds give per-rank noise
    seed_everything(args.seed + placement.dp_rank)
    run_dir, resume_from = resolve_run_dir(args)
    if placement.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"run directory: {run_dir}", flush=True)
        OmegaConf.save(OmegaConf.create(args.log_config_merged), run_dir / TRAINING_CONFIG)

    # 1. data
    # train_data weighted by train_data_weights, split by args.split (valid part or valid_data)
    train_set, valid_set = build_training_data(args, placement.dp_rank, with_valid=bool(args.eval_interval))
    loader, sampler = build_loader(
        train_set, args.batch_size, args.num_workers, placement.dp_rank, placement.dp_world_size, args.seed,
        prefetch_factor=args.prefetch_factor,
        worker_init_fn=ignore_stop_signals if signals.enabled else None,
    )
    stream = BatchStream(loader, sampler)
    valid_stream = None
    if valid_set is not None:
        vloader, vsampler = build_loader(valid_set, args.eval_batch_size or args.batch_size, 0, placement.dp_rank, placement.dp_world_size, args.seed + 1)
        valid_stream = BatchStream(vloader, vsampler)
        if placement.is_main and not args.only_log_video_latents and not mp4_writer_available():
            print(f"warning: validation samples are written as PNG contact sheets only: {MP4_NEEDS}", flush=True)

    # 2. model, optimizer, LR schedule
    engine = build_engine(args, resume_from)
    if args.sequence_parallel:
        enable_sequence_parallel(engine)
    check_latent_cache(train_set, args, engine)
    if int((args.deepspeed_config.get("zero_optimization") or {}).get("stage", 0)) == 3:
        dtype, _ = precision_from_flags(args)
        hide_frozen_modules_from_zero3(engine, placement.device, dtype)
    schedule = LRSchedule(args.lr_decay_iters or args.train_iters, args.warmup, args.lr_decay_style, args.lr_decay_ratio)
    ds_config = optimizer_config(args.deepspeed_config, placement.device)
    load_dir, tag = None, None
    if resume_from is not None:
        tag = choose_resume_tag(resume_from)  # `latest`, or the newest intact checkpoint if it is damaged
        # saved by another process count: DeepSpeed loads a universal copy
        load_dir = prepare_resume(resume_from, tag, ds_config)
    import deepspeed

    ds_engine, _, _, _ = deepspeed.initialize(
        model=engine,
        model_parameters=param_groups(engine),
        config=ds_config,
        lr_scheduler=lambda opt: build_scheduler(opt, schedule),
        dist_init_required=False,
    )

    # 3. exact resume: weights, optimizer, scheduler (DeepSpeed), then RNG and data position
    state = LoopState()
    if resume_from is not None:
        settings = group_settings(ds_engine.optimizer)  # the config's, which the checkpoint's would replace
        client = resume_checkpoint(ds_engine, resume_from, load_dir, tag)
        changes = restore_settings(ds_engine.optimizer, settings) + getattr(ds_engine.lr_scheduler, "changes", [])
        state.iteration = state.last_saved = int(client["iteration"])
        state.skipped.update(client.get("skipped", {}))
        stream.load_state_dict(data_position(client, placement.dp_world_size))
        if args.no_load_rng:  # as SAT's no_load_rng: fresh random streams, one per data-parallel rank
            reseed_rank(args.seed, placement.dp_rank, state.iteration)
            exact = False
        else:
            exact = restore_rank_rng(client, placement.rank, placement.world_size, placement.dp_rank, args.seed, state.iteration)
        if placement.is_main:
            note = "" if exact else " (no_load_rng or another process count: random streams reseeded)"
            print(f"resumed from {resume_from} at iteration {state.iteration}{note}", flush=True)
            for change in changes:  # e.g. train_iters raised to train longer
                print(f"warning: the optimizer and LR schedule follow the config, not the checkpoint: {change}", flush=True)
    ema = start_ema(ds_engine, args.deepspeed_config, resume_from, tag)
    for change in ema.changes if ema is not None and placement.is_main else []:
        print(f"warning: the EMA follows the config, not the checkpoint: {change}", flush=True)

    logger = MetricsLogger(run_dir, enabled=placement.is_main, use_wandb=args.wandb, wandb_project=args.wandb_project_name)
    try:
        return run_loop(
            ds_engine, stream, valid_stream, args, LoopConfig.from_args(args), state, run_dir, logger, placement.device, stream.state_dict, ema, signals
        )
    finally:
        logger.close()
        for batches in (stream, valid_stream):
            if batches is not None:
                batches.close()

"""Cross-key invariants of a run, checked before anything heavy is loaded.

Each rule is a small function `RunContext -> Problem*` registered with `@rule`; every rule runs
and all problems are reported together. Messages say what to change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cogvideox_sat.config.context import VAE_SPACE_COMPRESSION, VAE_TIME_COMPRESSION, RunContext
from cogvideox_sat.config.problems import Problem, closest
from cogvideox_sat.config.schema import MISPLACED_FP16_KEYS
from torch.utils.data import IterableDataset

Rule = Callable[[RunContext], Iterable[Problem]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def run_rules(ctx: RunContext) -> list[Problem]:
    problems: list[Problem] = []
    for fn in RULES:
        problems.extend(fn(ctx))
    return problems


def _p(ctx: RunContext, key: str, message: str, fix: str = "", warning: bool = False) -> Problem:
    return Problem(key, message, fix, ctx.file_of(key), warning)


# ---- precision ---------------------------------------------------------------------------
@rule
def one_precision(ctx: RunContext) -> Iterator[Problem]:
    if ctx.precision("fp16") and ctx.precision("bf16"):
        key = "deepspeed.fp16.enabled" if ctx.deepspeed_flag("fp16") else "args.fp16"
        yield _p(ctx, key, "fp16 and bf16 are both enabled", "enable exactly one (bf16 for 5B/1.5, fp16 or bf16 for 2B)")


@rule
def precision_matches_deepspeed(ctx: RunContext) -> Iterator[Problem]:
    if ctx.kind != "train" or ctx.args is None:
        return
    for name in ("fp16", "bf16"):
        ds = ctx.deepspeed_flag(name)
        if ds is not None and ctx.args_set(name) and bool(getattr(ctx.args, name)) != ds:
            yield _p(
                ctx,
                f"args.{name}",
                f"args.{name}={getattr(ctx.args, name)} disagrees with deepspeed.{name}.enabled={ds}",
                f"set both to the same value (DeepSpeed runs the optimizer in deepspeed.{name})",
            )


@rule
def fp16_only_for_2b(ctx: RunContext) -> Iterator[Problem]:
    if ctx.precision("fp16") and ctx.pos_embed_kind == "rope":
        key = "deepspeed.fp16.enabled" if ctx.deepspeed_flag("fp16") else "args.fp16"
        yield _p(
            ctx,
            key,
            "fp16 is only supported for the 2B architecture; 5B and 1.5 models were trained in bf16 and overflow in fp16",
            "disable fp16 and enable bf16 (args.bf16: true, deepspeed.bf16.enabled: true, deepspeed.fp16.enabled: false)",
        )


@rule
def fp16_needs_a_gpu_for_training(ctx: RunContext) -> Iterator[Problem]:
    if ctx.kind != "train" or not ctx.precision("fp16"):
        return
    import torch

    if not torch.cuda.is_available():
        key = "deepspeed.fp16.enabled" if ctx.deepspeed_flag("fp16") else "args.fp16"
        yield _p(ctx, key, "DeepSpeed cannot train in fp16 on a CPU (no GPU found)", "use bf16 or fp32 (bf16.enabled / fp16.enabled false) on a CPU")


# ---- frames and sizes --------------------------------------------------------------------
@rule
def train_frames_rule(ctx: RunContext) -> Iterator[Problem]:
    frames = ctx.train_frames()
    if ctx.kind != "train" or frames is None:
        return
    key = "data.params.max_num_frames"
    if (frames - 1) % VAE_TIME_COMPRESSION:
        lo = (frames - 1) // VAE_TIME_COMPRESSION * VAE_TIME_COMPRESSION + 1
        yield _p(ctx, key, f"{frames} frames: the 3D VAE needs 4k+1 frames", f"use {lo} or {lo + 4}")
    elif ctx.args is not None and ctx.args.train_frame_rule == "8n+1" and (frames - 1) % 8:
        lo = (frames - 1) // 8 * 8 + 1
        yield _p(
            ctx,
            key,
            f"{frames} frames: training clips follow the 8N+1 rule (49, 81, ...)",
            f"use {lo} or {lo + 8}, or set args.train_frame_rule: 4k+1 to opt out",
        )


@rule
def even_latent_frames_for_temporal_patch(ctx: RunContext) -> Iterator[Problem]:
    pt = ctx.patch_size[0]
    latent = ctx.latent_frames()
    if pt <= 1 or latent is None or latent % pt == 0:
        return
    if ctx.kind == "train":
        if ctx.model.get("pad_latent_frames"):
            return
        frames = ctx.train_frames()
        yield _p(
            ctx,
            "data.params.max_num_frames",
            f"{frames} frames give {latent} latent frames, not divisible by the temporal patch size {pt}",
            "set model.pad_latent_frames: true (repeats the first latent frame, as diffusers' 1.5 trainers do) "
            f"or use {frames + 4} frames",
        )
    else:
        yield _p(
            ctx,
            "args.sampling_num_frames",
            f"{latent} latent frames are not divisible by the temporal patch size {pt}",
            f"use {latent + pt - latent % pt} (22 for 5 s, 42 for 10 s with CogVideoX 1.5)",
        )


@rule
def image_size_multiple_of_16(ctx: RunContext) -> Iterator[Problem]:
    key, size = ctx.image_size()
    if key is None or size is None:
        return
    if len(size) != 2:
        yield _p(ctx, key, f"expected [height, width], got {size}", "give two numbers")
        return
    unit = VAE_SPACE_COMPRESSION * ctx.patch_size[1]
    bad = [v for v in size if int(v) % unit]
    if bad:
        fixed = [int(v) // unit * unit for v in size]
        yield _p(ctx, key, f"{size}: height and width must be multiples of {unit} (VAE /8 x patch {ctx.patch_size[1]})", f"use {fixed}")


@rule
def within_position_table(ctx: RunContext) -> Iterator[Problem]:
    if not ctx.has_fixed_position_table:
        return
    net = ctx.network
    latent = ctx.latent_frames()
    max_frames = net.get("num_frames")
    rate = net.get("time_compressed_rate", VAE_TIME_COMPRESSION)
    if latent is not None and isinstance(max_frames, int):
        max_latent = (max_frames - 1) // rate + 1
        if latent > max_latent:
            key = "args.sampling_num_frames" if ctx.kind == "sample" else "data.params.max_num_frames"
            yield _p(ctx, key, f"{latent} latent frames exceed the position table ({max_latent}, from network num_frames {max_frames})", "use fewer frames or a RoPE model")
    key, size = ctx.image_size()
    if size and len(size) == 2:
        h, w = (int(v) // VAE_SPACE_COMPRESSION for v in size)
        lh, lw = net.get("latent_height"), net.get("latent_width")
        if isinstance(lh, int) and isinstance(lw, int) and (h > lh or w > lw):
            yield _p(ctx, key, f"{size} is larger than the position table ({lh * 8}x{lw * 8})", f"use at most [{lh * 8}, {lw * 8}]")


@rule
def image_to_video_consistency(ctx: RunContext) -> Iterator[Problem]:
    net = ctx.network
    cin, cout = net.get("in_channels"), net.get("out_channels")
    if not (isinstance(cin, int) and isinstance(cout, int)):
        return
    concat = cin == 2 * cout
    noised = bool(ctx.model.get("noised_image_input"))
    if concat and not noised:
        yield _p(ctx, "model.noised_image_input", f"in_channels {cin} = 2 x out_channels means an image-to-video model, which needs the image latent", "set model.noised_image_input: true")
    elif noised and not concat:
        yield _p(ctx, "model.network_config.params.in_channels", f"noised_image_input needs in_channels = 2 x out_channels ({2 * cout}), got {cin}", f"set in_channels: {2 * cout} or noised_image_input: false")


# ---- LoRA --------------------------------------------------------------------------------
@rule
def lora_params(ctx: RunContext) -> Iterator[Problem]:
    for block in ctx.blocks_of("LoraMixin"):
        params = block.params
        key = f"{block.path}.params"
        r = params.get("r", 0)
        if not isinstance(r, int) or r <= 0:
            yield _p(ctx, f"{key}.r", f"LoRA rank must be a positive integer, got {r!r}", "set r (e.g. 128 for CogVideoX; the diffusers guide suggests lora_alpha = r or r/2)")
        supported = getattr(block.cls, "SUPPORTED_TARGETS", None)
        targets = params.get("target_modules")
        if supported is not None and targets is not None:
            for t in [targets] if isinstance(targets, str) else targets:
                if t not in supported:
                    yield _p(ctx, f"{key}.target_modules", f"'{t}' is not a layer LoRA can adapt", f"choose from {', '.join(supported)}")
        layers = ctx.network.get("num_layers")
        layer_range = params.get("layer_range")
        if layer_range is not None and isinstance(layers, int):
            bad = [i for i in layer_range if not 0 <= int(i) < layers]
            if bad:
                yield _p(ctx, f"{key}.layer_range", f"layers {bad} do not exist (the model has {layers})", f"use indices 0..{layers - 1}")


# ---- iterations and batch sizes ----------------------------------------------------------
@rule
def iterations_or_epochs(ctx: RunContext) -> Iterator[Problem]:
    if ctx.kind != "train" or ctx.args is None:
        return
    if ctx.args.train_iters is not None and ctx.args.epochs is not None:
        yield _p(ctx, "args.epochs", "both train_iters and epochs are set", "keep one of them (train_iters is recommended)")
    elif ctx.args.train_iters is None and ctx.args.epochs is None:
        yield _p(ctx, "args.train_iters", "neither train_iters nor epochs is set; 10000 iterations will be used", "set args.train_iters", warning=True)


@rule
def deepspeed_batch_sizes(ctx: RunContext) -> Iterator[Problem]:
    if ctx.kind != "train":
        return
    ds = ctx.deepspeed
    micro = ds.get("train_micro_batch_size_per_gpu")
    accum = ds.get("gradient_accumulation_steps")
    total = ds.get("train_batch_size")
    if ctx.args is not None:
        for arg, value, ds_key in (("batch_size", micro, "train_micro_batch_size_per_gpu"), ("gradient_accumulation_steps", accum, "gradient_accumulation_steps")):
            if value is not None and ctx.args_set(arg) and getattr(ctx.args, arg) != value:
                yield _p(ctx, f"args.{arg}", f"args.{arg}={getattr(ctx.args, arg)} disagrees with deepspeed.{ds_key}={value}", "set one of them only, or both to the same value")
    if total is not None and micro is not None:
        # DeepSpeed runs without a model-parallel unit here, so it counts every process
        world = ctx.world_size
        expected = micro * (accum or 1) * world
        if total != expected:
            yield _p(
                ctx,
                "deepspeed.train_batch_size",
                f"{total} != micro batch {micro} x accumulation {accum or 1} x processes {world} = {expected}",
                "remove train_batch_size (DeepSpeed derives it) or make the product match",
            )


@rule
def zero_stage_matches(ctx: RunContext) -> Iterator[Problem]:
    if ctx.kind != "train" or ctx.args is None or not ctx.args_set("zero_stage"):
        return
    stage = (ctx.deepspeed.get("zero_optimization") or {}).get("stage")
    if stage is not None and stage != ctx.args.zero_stage:
        yield _p(ctx, "args.zero_stage", f"args.zero_stage={ctx.args.zero_stage} disagrees with deepspeed.zero_optimization.stage={stage}", "set the stage in one place (deepspeed.zero_optimization.stage)")


@rule
def ignored_loss_scale_keys(ctx: RunContext) -> Iterator[Problem]:
    for key in MISPLACED_FP16_KEYS:
        if key in ctx.deepspeed:
            yield _p(ctx, f"deepspeed.{key}", "DeepSpeed ignores this key at the top level (the official sft.yaml puts it there)", f"move it under deepspeed.fp16.{key} if you use fp16", warning=True)


@rule
def ema_optimizer(ctx: RunContext) -> Iterator[Problem]:
    """FusedEmaAdam's EMA keys: a decay in (0, 1), and only on an optimizer that keeps an EMA."""
    from cogvideox_sat.training.ema import ema_problems

    optimizer = ctx.deepspeed.get("optimizer")
    if isinstance(optimizer, dict):
        for key, message, fix in ema_problems(optimizer):
            yield _p(ctx, f"deepspeed.optimizer.{key}", message, fix)


# ---- keys that do nothing here, or whose absence of effect would change results ------------------
def _declared_problem(ctx: RunContext, key: str, value: object) -> Iterator[Problem]:
    from cogvideox_sat.config.keys import behaviour

    declared = behaviour(key)
    if declared.kind == "acts" or value in declared.neutral:
        return
    if declared.kind == "warn":
        yield _p(ctx, key, f"{value!r} has no effect here; what acts instead: {declared.does}", "remove it", warning=True)
    else:
        yield _p(ctx, key, f"{value!r} cannot be honoured", declared.does)


@rule
def declared_key_behaviour(ctx: RunContext) -> Iterator[Problem]:
    """One warning per inert key the configs set, one error per key whose effect is missing here
    (the table is cogvideox_sat.config.keys; TransformerArgs itself raises for transformer_args)."""
    from cogvideox_sat.config.keys import TARGET_PARAMS, TRANSFORMER_ARGS, TRANSFORMER_ARGS_PATH

    if ctx.args is not None:
        for name in sorted(ctx.args.model_fields_set - {"base"}):
            yield from _declared_problem(ctx, f"args.{name}", getattr(ctx.args, name))
    for name in ctx.model or {}:
        if name in _engine_key_names():
            yield from _declared_problem(ctx, f"model.{name}", ctx.model[name])
    for suffix in TARGET_PARAMS:
        block, _, param = suffix.rpartition(".params.")
        params = ((ctx.model or {}).get(block) or {}).get("params") or {}
        if param in params:
            yield from _declared_problem(ctx, f"model.{suffix}", params[param])
    for name, value in (ctx.network.get("transformer_args") or {}).items():
        if name in TRANSFORMER_ARGS and TRANSFORMER_ARGS[name].kind == "warn":
            yield from _declared_problem(ctx, f"{TRANSFORMER_ARGS_PATH}.{name}", value)


def _engine_key_names() -> frozenset[str]:
    from cogvideox_sat.config.keys import MODEL

    return frozenset(MODEL)


# ---- paths -------------------------------------------------------------------------------
def _checkpoint_folder_problems(ctx: RunContext, key: str, load: str) -> Iterator[Problem]:
    folder = Path(load)
    if not folder.is_dir():
        yield _p(ctx, key, f"checkpoint folder '{load}' does not exist", "point it at the released `transformer` folder or a training run's folder")
        return
    from cogvideox_sat.io.run_folder import read_latest
    from cogvideox_sat.io.sat_checkpoint import ema_checkpoint_folder, states_file_in

    if states_file_in(folder) is not None:  # an iteration folder such as `<run>/<n>-ema`
        return
    if ctx is not None and ctx.args is not None and ctx.args.ema and key == _ema_key(ctx):
        try:
            ema_checkpoint_folder(folder)
        except FileNotFoundError as err:
            yield _p(ctx, "args.ema", str(err), "drop --ema, or train with deepspeed.optimizer.type: sat.ops.FusedEmaAdam")
        return
    tag = read_latest(folder)
    if key == "args.load" and tag is None:
        from cogvideox_sat.io.diffusers_import import is_diffusers_transformer

        if is_diffusers_transformer(folder):  # converted in memory when loaded
            return
    if tag is None:
        yield _p(ctx, key, f"'{load}' has no `latest` file", "point it at the folder that holds `latest` and `<iteration>/mp_rank_00_model_states.pt`, or a diffusers transformer folder")
        return
    if states_file_in(folder / tag) is None:
        yield _p(ctx, key, f"`latest` says '{tag}' but '{folder / tag / 'mp_rank_00_model_states.pt'}' is missing", "complete the download or fix `latest`")


def _ema_key(ctx: RunContext) -> str:
    """The checkpoint key `args.ema` applies to: the LoRA run when one is given, else `load`."""
    return "args.lora_load" if ctx.args.lora_load else "args.load"


@rule
def checkpoint_dir(ctx: RunContext) -> Iterator[Problem]:
    if ctx.args is None:
        return
    if ctx.args.load is None and ctx.kind == "sample":
        yield _p(ctx, "args.load", "no checkpoint to sample from", "set args.load to a SAT checkpoint folder (the one holding `latest`)")
    for name in ("load", "resume", "lora_load"):
        value = getattr(ctx.args, name)
        if value is not None:
            yield from _checkpoint_folder_problems(ctx, f"args.{name}", value)


_PATH_FIXES = {
    "latent_cache": "build it first: python tools/build_latent_cache.py --base <the same configs>",
    "data_dir": "give an existing dataset folder (videos/ + labels/, or prompts.txt + videos.txt)",
    "*": "download the weights and give their local path (nothing is downloaded at run time)",
}


@rule
def model_paths(ctx: RunContext) -> Iterator[Problem]:
    for block in ctx.blocks:
        for name in getattr(block.cls, "path_params", ()):
            value = block.params.get(name)
            if value and not os.path.exists(str(value)):
                key = f"{block.path}.params.{name}"
                yield _p(ctx, key, f"'{value}' does not exist", _PATH_FIXES.get(name, _PATH_FIXES["*"]))


@rule
def data_paths(ctx: RunContext) -> Iterator[Problem]:
    if ctx.args is None:
        return
    if ctx.kind == "train":
        if not ctx.args.train_data:
            yield _p(ctx, "args.train_data", "no training data", "set args.train_data to your dataset folder(s)")
        if not ctx.data:
            yield _p(ctx, "data", "no data section", "add data: {target: data_video.SFTDataset, params: {...}} (see configs/sft.yaml)")
        for key in ("train_data", "valid_data"):
            for path in getattr(ctx.args, key) or []:
                problem = _missing_data(str(path))
                if problem:
                    yield _p(ctx, f"args.{key}", problem, "give an existing dataset folder or shard path")
    elif ctx.args.input_type == "txt" and not os.path.isfile(ctx.args.input_file):
        yield _p(ctx, "args.input_file", f"prompt file '{ctx.args.input_file}' does not exist", "create it (one prompt per line) or set args.input_type: cli to read stdin")


@rule
def data_weights_and_split(ctx: RunContext) -> Iterator[Problem]:
    """`train_data_weights` (one per train_data dataset) and `split` (proportions; folders only)."""
    if ctx.args is None or ctx.kind != "train":
        return
    from cogvideox_sat.data.mixing import check_weights
    from cogvideox_sat.data.split import parse_split, should_split

    args = ctx.args
    try:
        check_weights(args.train_data_weights, len(args.train_data or []))
    except ValueError as err:
        yield _p(ctx, "args.train_data_weights", str(err), "e.g. train_data: [clips, stills] with train_data_weights: [1, 2]; or remove it (all 1)")
    try:
        fractions = parse_split(args.split, args.valid_data is not None, args.test_data is not None)
    except ValueError as err:
        yield _p(ctx, "args.split", str(err))
        return
    if args.block_size < 1:
        yield _p(ctx, "args.block_size", f"{args.block_size} must be >= 1", "set it to at most the smallest train_data folder's sample count")
    block = next((b for b in ctx.blocks if b.path == "data"), None)
    streamed = block is not None and isinstance(block.cls, type) and issubclass(block.cls, IterableDataset)
    if should_split(fractions) and streamed:
        yield _p(ctx, "args.split", f"{args.split!r} would split streamed WebDataset shards, which cannot be split (officially too)", "set split: 1,0,0 and give valid_data")


def _missing_data(path: str) -> str | None:
    """What is missing of a data path: a folder or file, or WebDataset shard syntax (brace
    patterns, comma lists, a leading ';' for include_dirs), which must name only existing shards."""
    if os.path.exists(path):
        return None
    if not any(c in path for c in "{,;"):
        return f"'{path}' does not exist"
    from cogvideox_sat.data.shards import expand_shards

    shards = expand_shards(path)
    missing = [s for s in shards if not os.path.exists(s)]
    if not shards:
        return f"'{path}' names no shard"
    if missing:
        return f"'{path}' names {len(shards)} shard(s), {len(missing)} missing (first: '{missing[0]}')"
    return None


# ---- network internals -------------------------------------------------------------------
@rule
def transformer_args_valid(ctx: RunContext) -> Iterator[Problem]:
    """The DiT's `transformer_args` block is a plain mapping (no target), so check it here."""
    block = ctx.network.get("transformer_args")
    if block is None:
        return
    from cogvideox_sat.models.transformer_args import TransformerArgs

    key = "model.network_config.params.transformer_args"
    known = [f for f in TransformerArgs.__dataclass_fields__]
    for name in block:
        if name not in known:
            yield _p(ctx, f"{key}.{name}", "unknown key", f"remove it; {closest(name, known)}")
    try:
        TransformerArgs.from_config({k: v for k, v in block.items() if k in known})
    except (TypeError, ValueError) as err:
        yield _p(ctx, key, str(err))


@rule
def fp8_options(ctx: RunContext) -> Iterator[Problem]:
    """`transformer_args.fp8` / `fp8_base_storage`: GPU only; fp8 only on the bf16 model (fp32 and
    fp16 are the exact official-parity path); FP8 storage only for the frozen base of LoRA."""
    block = ctx.network.get("transformer_args") or {}
    key = "model.network_config.params.transformer_args"
    wanted = [name for name in ("fp8", "fp8_base_storage") if block.get(name) not in (None, False)]
    if not wanted:
        return
    import torch

    device = None if ctx.args is None else str(ctx.args.device)
    if not torch.cuda.is_available() or device == "cpu":
        where = "args.device is cpu" if device == "cpu" else "no CUDA GPU found"
        for name in wanted:
            yield _p(ctx, f"{key}.{name}", f"needs a CUDA GPU ({where})", f"remove {name} for CPU runs")
    if "fp8" in wanted and not ctx.precision("bf16"):
        yield _p(
            ctx,
            f"{key}.fp8",
            "FP8 matmuls are for the bf16 model; fp32 and fp16 runs are the exact official-parity path",
            "enable bf16 (args.bf16: true, deepspeed.bf16.enabled: true) or remove fp8",
        )
    if "fp8_base_storage" in wanted:
        if not ctx.blocks_of("LoraMixin"):
            yield _p(
                ctx,
                f"{key}.fp8_base_storage",
                "stores the frozen base of a LoRA run in float8; without lora_config this is full fine-tuning, which trains those weights",
                "add model.network_config.params.modules.lora_config or remove fp8_base_storage",
            )
        elif ctx.kind == "train" and "all" not in (ctx.model.get("not_trainable_prefixes") or []):
            yield _p(
                ctx,
                f"{key}.fp8_base_storage",
                "keeps the base weights frozen in float8, but model.not_trainable_prefixes leaves some of them trainable",
                "set model.not_trainable_prefixes: [all] (only the LoRA adapters train) or remove fp8_base_storage",
            )
        if ctx.kind == "train" and ctx.args is not None and ctx.args.zero_stage == 3:
            yield _p(ctx, f"{key}.fp8_base_storage", "ZeRO-3 would partition the float8 base weights", "use zero_stage 2 (the frozen base is not sharded anyway)")


# ---- parallelism -------------------------------------------------------------------------
@rule
def sequence_parallel_layout(ctx: RunContext) -> Iterator[Problem]:
    if ctx.args is None:
        return
    mp = ctx.args.model_parallel_size
    if ctx.args.sequence_parallel:
        if mp < 2:
            yield _p(ctx, "args.sequence_parallel", "sequence parallelism needs model_parallel_size >= 2 (the ranks that share one clip)", "set args.model_parallel_size to the degree, e.g. 2 or 4")
        heads = ctx.network.get("num_attention_heads")
        if isinstance(heads, int) and mp >= 2:
            from cogvideox_sat.parallel import check_sequence_parallel_degree

            try:
                check_sequence_parallel_degree(heads, mp)
            except ValueError as err:
                yield _p(ctx, "args.model_parallel_size", str(err))
    if ctx.world_size % mp:
        yield _p(ctx, "args.model_parallel_size", f"{mp} does not divide the {ctx.world_size} processes", "launch a multiple of model_parallel_size processes")


# ---- ID token ----------------------------------------------------------------------------
@rule
def id_token_reaches_the_text_encoder(ctx: RunContext) -> Iterator[Problem]:
    """The token is put in front of the captions (`txt`): an embedder must read them, else it
    would be silently ignored."""
    token = ctx.args.id_token if ctx.args is not None else None
    if not token:
        return
    if not token.strip():
        yield _p(ctx, "args.id_token", f"{token!r} is only whitespace", "set a word (e.g. a rare token naming the subject) or remove id_token")
        return
    from cogvideox_sat.id_token import CAPTION_KEY

    embedders = ((ctx.model.get("conditioner_config") or {}).get("params") or {}).get("emb_models") or []
    keys = [e.get("input_key") for e in embedders if isinstance(e, dict)]
    if embedders and CAPTION_KEY not in keys:
        yield _p(
            ctx, "args.id_token", f"no conditioner embedder reads the captions ('{CAPTION_KEY}'; input keys: {keys}), so the token would change nothing",
            f"give the text embedder input_key: {CAPTION_KEY} or remove id_token",
        )

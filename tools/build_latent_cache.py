"""Precompute VAE latents and T5 embeddings of a fine-tuning dataset, so training skips both.

    python tools/build_latent_cache.py --base configs/cogvideox_2b_lora.yaml configs/sft.yaml \\
        --cache-dir cache/disney [--data disney] [--device cuda] [--num-workers 8]

Uses the same configs as training: the data (`args.train_data`, or --data), the dataset
(`data.target` SFTDataset: folders; VideoDataset: WebDataset shards) and its params
(`data.params`), and the VAE and T5 of the `model:` section. WebDataset clips start at random
in the official stream: the cache keeps --windows starts per clip (drawn once; default 1) and
training picks one of them per visit. Interrupt it any time; a rerun resumes where it
stopped. Entries are keyed by file (or shard) content, caption, preprocessing params and model
weights, so a change to any of them is simply a cache miss (rebuild to fill it; --prune
deletes entries nothing uses any more).

Split over several GPUs (one process each; samples or shards are dealt out by rank, and every
process writes its own entries, so nothing is shared but the folder):
    torchrun --nproc_per_node 8 tools/build_latent_cache.py --base ... --cache-dir cache/disney

Then train with, in the configs:
    data.params.latent_cache: cache/disney     # items carry latents instead of pixels
    model.latent_input: true                   # the engine skips the VAE (official option)
Text embeddings are stored as `txt_emb` in each item; the conditioner still runs T5 on the
caption unless it reads them. Each entry also keeps the clip's first frame (uint8 pixels, as
training preprocesses them), so image-to-video models (model.noised_image_input) train from
the cache too: the engine takes the clip latent from it and encodes only the freshly noised
first frame each step (noise is added in pixel space). One cache serves a T2V and an I2V
model with the same VAE and T5. --no-first-frame saves those pixels (about 8% of an entry)
for text-to-video-only caches; an I2V run then asks for a rebuild.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cogvideox_sat.config import load_configs  # noqa: E402
from cogvideox_sat.data import (  # noqa: E402
    CacheEncoders,
    LatentCache,
    SFTDataset,
    VideoDataset,
    build_latent_cache,
    build_shard_latent_cache,
    model_fingerprint,
)
from cogvideox_sat.dtypes import DTYPES  # noqa: E402
from cogvideox_sat.data.hashing import HashMemo  # noqa: E402
from cogvideox_sat.data.latent_cache import process_memo  # noqa: E402
from cogvideox_sat.registry import instantiate_from_config, resolve_target  # noqa: E402



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", nargs="+", required=True, help="model and run configs, as for training")
    parser.add_argument("--cache-dir", help="cache folder (default: data.params.latent_cache)")
    parser.add_argument("--data", nargs="+", help="dataset folder(s) or shard path(s) (default: args.train_data)")
    parser.add_argument("--device", help="default: the GPU of this process (cuda:LOCAL_RANK under torchrun), else the CPU")
    parser.add_argument("--precision", choices=sorted(DTYPES), help="model precision (default: the config's, as training)")
    parser.add_argument("--store-dtype", choices=sorted(DTYPES), default="fp32", help="dtype of stored tensors (bf16 halves the disk)")
    parser.add_argument("--num-workers", type=int, default=4, help="decoding workers")
    parser.add_argument("--seed", type=int, help="seed for models built without weights (default: args.seed)")
    parser.add_argument("--prune", action="store_true", help="delete entries the given data no longer uses")
    parser.add_argument("--windows", type=int, default=1, help="WebDataset shards: clip windows cached per video (training picks one per visit)")
    parser.add_argument("--no-first-frame", action="store_true", help="do not keep first frames (text-to-video only)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def config_precision(cfg: Any) -> str:
    """The run's precision as training would use it (deepspeed section, then args)."""
    ds, args = cfg.section("deepspeed"), cfg.section("args")
    if (ds.get("bf16") or {}).get("enabled") or args.get("bf16"):
        return "bf16"
    if (ds.get("fp16") or {}).get("enabled") or args.get("fp16"):
        return "fp16"
    return "fp32"


def text_embedder(conditioner: torch.nn.Module) -> torch.nn.Module:
    """The conditioner's embedder of the caption (input_key `txt`)."""
    for embedder in getattr(conditioner, "embedders", []):
        if getattr(embedder, "input_key", None) == "txt":
            return embedder
    raise ValueError("model.conditioner_config has no embedder with input_key 'txt' to cache")


def real_encoders(model_cfg: dict, device: str, dtype: torch.dtype, hashes: HashMemo) -> CacheEncoders:
    """The VAE and T5 of a model config, as the engine runs them, behind the cache interface."""
    vae = instantiate_from_config(model_cfg["first_stage_config"]).eval().to(device=device, dtype=dtype)
    conditioner = instantiate_from_config(model_cfg["conditioner_config"])
    t5 = text_embedder(conditioner).eval().to(device=device, dtype=dtype)
    # the official VAE samples its posterior: store the moments, items draw a latent each time
    moments = bool(getattr(vae.regularization, "sample", False))
    autocast = device.startswith("cuda") and not model_cfg.get("disable_first_stage_autocast", False)

    @torch.no_grad()
    def encode_video(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=device, dtype=dtype).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
        with torch.autocast(torch.device(device).type, enabled=autocast):
            out = vae.encode_moments(x) if moments else vae.encode(x)
        return out.float().cpu()

    @torch.no_grad()
    def encode_text(texts: list[str]) -> torch.Tensor:
        return t5(texts).float().cpu()

    return CacheEncoders(
        encode_video=encode_video,
        encode_text=encode_text,
        fingerprint=model_fingerprint(model_cfg, hashes, first_stage=vae),
        latent_kind="moments" if moments else "latent",
        description={"precision": str(dtype), "vae_sample": moments},
    )


def process_part() -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process under torchrun / a launcher; (0, 1, 0) alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, world, local_rank = process_part()
    if args.device is None:
        args.device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(args.device))  # anything a model allocates lands on this process's GPU
    if args.prune and world > 1:
        print("error: --prune needs one process (run it once after the split build)", file=sys.stderr)
        return 2
    cfg = load_configs(args.base)
    model_cfg, data_cfg, run_args = cfg.section("model"), cfg.section("data"), cfg.section("args")
    # 1. Data: the training dataset's params, decoding pixels
    target = resolve_target(data_cfg["target"]) if data_cfg and data_cfg.get("target") else None
    if target not in (SFTDataset, VideoDataset):
        print(f"error: the latent cache needs data.target SFTDataset or VideoDataset, got {data_cfg.get('target')!r}", file=sys.stderr)
        return 2
    if args.windows < 1 or (args.windows != 1 and target is SFTDataset):
        print("error: --windows is for WebDataset shards (VideoDataset, random clip starts), >= 1; SFTDataset's frames are fixed", file=sys.stderr)
        return 2
    params = dict(data_cfg.get("params") or {})
    cache_dir = args.cache_dir or params.pop("latent_cache", None)
    params.pop("latent_cache", None)
    folders = args.data or run_args.get("train_data") or []
    if not cache_dir or not folders:
        print("error: give --cache-dir (or data.params.latent_cache) and --data (or args.train_data)", file=sys.stderr)
        return 2
    if args.no_first_frame and model_cfg.get("noised_image_input"):
        print("error: --no-first-frame with an image-to-video model (noised_image_input): its training needs them", file=sys.stderr)
        return 2
    # 2. Models (a VAE without weights is random: seeded, so a resumed build gets the same one)
    seed = args.seed if args.seed is not None else int(run_args.get("seed", 1234))
    torch.manual_seed(seed)
    hashes = process_memo(cache_dir, rank)  # weight digests another process already took are not read again
    dtype = DTYPES[args.precision or config_precision(cfg)]
    encoders = real_encoders(model_cfg, args.device, dtype, hashes)
    hashes.save()
    # 3. Build per folder (content-addressed: folders share one cache), prune at the end
    keys: list[str] = []
    indexes: list[str] = []
    for folder in folders:
        options = dict(
            num_workers=args.num_workers,
            store_dtype=DTYPES[args.store_dtype],
            first_frame=not args.no_first_frame,
            progress=not args.no_progress and rank == 0,
            part=(rank, world),
        )
        if target is SFTDataset:
            report = build_latent_cache(SFTDataset(data_dir=folder, **params), cache_dir, encoders, **options)
        else:  # one process reads every shard (rank 0 of 1), without the training start-up check
            dataset = VideoDataset(folder, **{**params, "rank": 0, "world_size": 1, "check_on_start": False})
            report = build_shard_latent_cache(dataset, cache_dir, encoders, windows=args.windows, **options)
        keys += report.keys
        indexes += report.indexes
        print(f"{folder}: {report}" + (f" (process {rank} of {world})" if world > 1 else ""))
    if args.prune:
        print(f"pruned {LatentCache(cache_dir).prune(keys, indexes)} stale entries")
    print(f"cache ready: {cache_dir} (set data.params.latent_cache: {cache_dir} and model.latent_input: true)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

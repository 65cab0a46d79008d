"""End-to-end training speed through train_video.py: step time, peak memory, data cost.

Random weights (no released checkpoint), a stand-in T5 with the real width (1 layer: the text
encoder is not what is measured), the real-size VAE (random weights saved once, so the latent
cache and training read the same file), generated clips. Each `--data` mode is one
train_video.py run:

- `pixels`: items are decoded clips; every step encodes them with the VAE and runs T5 (no cache);
- `cache`: tools/build_latent_cache.py first encodes the clips and captions once, then training
  reads latents + text embeddings (`data.params.latent_cache`, `model.latent_input: true`);
- `shard-cache`: the same clips packed into one WebDataset shard (`data_video.VideoDataset`),
  cached and trained on the same way (training reads the shard's index, never the tar).

With `--dit-only` the same transformer (config, LoRA, checkpoint mode, compile) is also timed
alone on random latents of the clip's size (forward + backward, no optimizer, no data), so the
table shows what share of the transformer-only rate each end-to-end run reaches.

    python benchmarks/train_run.py --config configs/cogvideox_2b_lora.yaml --steps 20 \
        --clips .devdata/clips --frames 49 --size 480 720 --data pixels cache \
        --checkpoint-mode selective --compile --dit-only
    python benchmarks/train_run.py --tiny --data pixels cache --dit-only   # CPU smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import print_header  # noqa: E402

from cogvideox_sat.training.metrics import read_metrics  # noqa: E402


@dataclass
class RunResult:
    label: str
    steps: int
    median_s: float
    min_s: float
    max_s: float
    peak_gib: float
    final_loss: float
    setup_s: float = 0.0  # cache build (once per dataset), not per step


def model_section(config: Path) -> dict[str, Any]:
    return yaml.safe_load(config.read_text())["model"]


def text_width(config: Path) -> int:
    return int(model_section(config)["network_config"]["params"]["modules"]["patch_embed_config"]["params"]["text_hidden_size"])


def save_random_vae(config: Path, path: Path, seed: int = 0) -> Path:
    """The config's VAE with random weights, saved as a `3d-vae.pt`-style state dict."""
    import torch

    from cogvideox_sat.registry import instantiate_from_config

    vae_cfg = model_section(config)["first_stage_config"]
    vae_cfg["params"]["ckpt_path"] = None
    torch.manual_seed(seed)
    vae = instantiate_from_config(vae_cfg)
    torch.save({"state_dict": vae.state_dict()}, path)
    return path


def make_assets(config: Path, work: Path, clips: Path | None, frames: int, size: list[int], n_clips: int) -> tuple[Path, Path, Path]:
    """(clips, stand-in T5 folder, random VAE file) in `work`, each made only if absent (so later
    calls with the same work folder reuse them)."""
    from cogvideox_sat.demo.clips import make_sft_folder
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    clips = clips or work / f"clips-{frames}x{size[0]}x{size[1]}"
    if not (clips / "videos").is_dir():
        if importlib.util.find_spec("imageio_ffmpeg") is None:
            raise SystemExit(f"no clips in {clips}, and writing them needs imageio-ffmpeg: pip install imageio-ffmpeg, "
                             "or pass --clips DIR (videos/ + labels/, e.g. made with cogvideox_sat.demo.clips on another machine)")
        make_sft_folder(clips, n_clips=n_clips, num_frames=frames, height=size[0], width=size[1], fps=8)
    width = text_width(config)
    t5 = work / f"t5-{width}"
    if not (t5 / "config.json").is_file():
        make_tiny_t5(t5, d_model=width, num_layers=1, num_heads=max(width // 64, 1), d_kv=64, d_ff=256)
    vae = work / f"vae-{config.stem}.pt"
    if not vae.is_file():
        save_random_vae(config, vae)
    return clips, t5, vae


def overlay(args: argparse.Namespace, work: Path, clips: Path, t5: Path, vae: Path, cache: Path | None) -> dict[str, Any]:
    max_length = model_section(args.config)["conditioner_config"]["params"]["emb_models"][0]["params"]["max_length"]
    emb = {"is_trainable": False, "input_key": "txt", "ucg_rate": 0.1, "target": "cogvideox_sat.conditioner.FrozenT5Embedder",
           "params": {"model_dir": str(t5), "max_length": max_length}}
    ckpt = args.checkpoint_activations == "true"
    transformer_args: dict[str, Any] = {"checkpoint_activations": ckpt}
    if args.checkpoint_mode:
        transformer_args["checkpoint_mode"] = args.checkpoint_mode
    if args.compile:
        transformer_args["compile"] = True
    data_params: dict[str, Any] = {"video_size": list(args.size), "fps": 8, "max_num_frames": args.frames, "skip_frms_num": 0.0}
    model: dict[str, Any] = {
        "conditioner_config": {"params": {"emb_models": [emb]}},
        "first_stage_config": {"params": {"ckpt_path": str(vae)}},
        "network_config": {"params": {"transformer_args": transformer_args}},
    }
    if cache is not None:
        data_params["latent_cache"] = str(cache)
        model["latent_input"] = True
    return {
        "model": model,
        "args": {"mode": "pretrain", "load": None, "train_iters": args.steps, "save_interval": 10**9, "log_interval": 1,
                 "eval_interval": None, "valid_data": None, "train_data": [str(clips)], "save": str(work / "runs"),
                 "num_workers": args.num_workers, "checkpoint_activations": ckpt, "train_frame_rule": "4k+1"},
        "data": {"target": "cogvideox_sat.data.SFTDataset", "params": data_params},
        "deepspeed": {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
                      "zero_optimization": {"stage": args.zero_stage}, "zero_allow_untested_optimizer": True,
                      "bf16": {"enabled": args.precision == "bf16"}, "fp16": {"enabled": args.precision == "fp16"},
                      "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-4}}},
    }


def pack_shard(clips: Path, shard: Path, frames: int, fps: float = 8.0) -> Path:
    """The clips of an SFT folder (videos/ + labels/) as one WebDataset tar shard with json metadata."""
    import json

    from cogvideox_sat.demo.shards import write_shard

    if shard.is_file():
        return shard
    shard.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"duration": frames / fps, "fps": fps}).encode()
    samples = {
        video.stem: {"mp4": video.read_bytes(), "txt": (clips / "labels" / f"{video.stem}.txt").read_bytes(), "json": meta}
        for video in sorted((clips / "videos").glob("*.mp4"))
    }
    return write_shard(shard, samples)


def as_shard_run(config_overlay: dict[str, Any], shard: Path, frames: int, size: list[int], cache: Path | None) -> dict[str, Any]:
    """`config_overlay` reading `shard` through VideoDataset instead of the folder."""
    params: dict[str, Any] = {"image_size": list(size), "num_frames": frames, "fps": 8, "skip_frms_num": 0.0}
    if cache is not None:
        params["latent_cache"] = str(cache)
    config_overlay["data"] = {"target": "data_video.VideoDataset", "params": params}
    config_overlay["args"]["train_data"] = [str(shard)]
    return config_overlay


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True, capture_output=True)
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-6000:], sep="\n")
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed with exit code {proc.returncode}")


def train(args: argparse.Namespace, label: str, work: Path, config_overlay: dict[str, Any]) -> RunResult:
    work.mkdir(parents=True, exist_ok=True)
    (work / "overlay.yaml").write_text(yaml.safe_dump(config_overlay))
    run([sys.executable, str(REPO / "train_video.py"), "--base", str(args.config), str(work / "overlay.yaml"), "--seed", "1"])
    (run_dir,) = [p for p in (work / "runs").iterdir() if p.is_dir()]
    records = read_metrics(run_dir)
    steps = [r["step_s"] for r in records if "step_s" in r]
    timed = steps[args.skip:] or steps  # the first steps compile and warm the allocator
    return RunResult(label, len(steps), statistics.median(timed), min(timed), max(timed),
                     max((r["max_mem_gib"] for r in records if "max_mem_gib" in r), default=float("nan")), records[-1]["loss"])


def build_cache(args: argparse.Namespace, work: Path, config_overlay: dict[str, Any], cache: Path) -> float:
    work.mkdir(parents=True, exist_ok=True)
    (work / "overlay.yaml").write_text(yaml.safe_dump(config_overlay))
    start = time.perf_counter()
    run([sys.executable, str(REPO / "tools" / "build_latent_cache.py"), "--base", str(args.config), str(work / "overlay.yaml"),
         "--cache-dir", str(cache), "--seed", "1", "--no-progress", "--num-workers", str(args.num_workers)])
    return time.perf_counter() - start


def dit_only(args: argparse.Namespace) -> tuple[float, float]:
    """Median forward+backward seconds and peak GiB of the config's transformer alone."""
    import torch

    from dit_step import DTYPES, Setting, build_ours, make_inputs, measure, network_config, release

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = DTYPES[args.precision]
    mode = args.checkpoint_mode or ("full" if args.checkpoint_activations == "true" else "none")
    cfg = network_config([str(args.config)])
    cfg["params"]["dtype"] = args.precision  # as the engine builds it for the run's precision
    torch.manual_seed(0)
    model, _ = build_ours(cfg, Setting(mode, args.compile), device, dtype, "auto",
                          "aot_eager" if device.type == "cpu" else "inductor")
    kwargs = make_inputs(model, 1, args.frames, *args.size, device, dtype)

    def step() -> None:
        model(**kwargs).float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    times, _, peak = measure(step, device, warmup=2, steps=max(args.steps - args.skip, 3))
    del model, kwargs
    release(device)
    return statistics.median(times), peak


def main(argv: list[str] | None = None) -> list[RunResult]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs/cogvideox_2b_lora.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip", type=int, default=3, help="first steps left out of the median (compilation, warm-up)")
    parser.add_argument("--clips", type=Path, default=None, help="folder of videos/ + labels/ (generated if absent)")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--size", type=int, nargs=2, default=[480, 720])
    parser.add_argument("--data", nargs="+", choices=["pixels", "cache", "shard-cache"], default=["pixels"], help="one run per mode")
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--checkpoint-activations", choices=["true", "false"], default="true")
    parser.add_argument("--checkpoint-mode", choices=["full", "selective", "selective_mlp_out", "selective_matmul", "none"], default=None)
    parser.add_argument("--compile", action="store_true", help="transformer_args.compile: true")
    parser.add_argument("--dit-only", action="store_true", help="also time the transformer alone (the rate to compare with)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="demo model on the CPU, 4 steps")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.config, args.steps, args.skip, args.frames, args.size, args.precision = REPO / "configs/demo/tiny_t2v_lora.yaml", 4, 1, 9, [64, 96], "fp32"

    work = args.work or Path(tempfile.mkdtemp(prefix="train_run_"))
    clips, t5, vae = make_assets(args.config, work, args.clips, args.frames, args.size, n_clips=4)

    results: list[RunResult] = []
    for mode in args.data:
        if mode == "pixels":
            results.append(train(args, "train_video.py, pixels (VAE + T5 each step)", work / "pixels", overlay(args, work / "pixels", clips, t5, vae, None)))
        elif mode == "cache":
            cache = work / "cache"
            setup = build_cache(args, work / "cache_build", overlay(args, work / "cache_build", clips, t5, vae, None), cache)
            result = train(args, "train_video.py, latent cache", work / "cached", overlay(args, work / "cached", clips, t5, vae, cache))
            result.setup_s = setup
            results.append(result)
        else:  # shard-cache
            shard, cache = pack_shard(clips, work / "shards" / "clips-000.tar", args.frames), work / "shard_cache"
            build_cfg = as_shard_run(overlay(args, work / "shard_build", clips, t5, vae, None), shard, args.frames, args.size, None)
            setup = build_cache(args, work / "shard_build", build_cfg, cache)
            train_cfg = as_shard_run(overlay(args, work / "shard_cached", clips, t5, vae, cache), shard, args.frames, args.size, cache)
            result = train(args, "train_video.py, latent cache of a shard", work / "shard_cached", train_cfg)
            result.setup_s = setup
            results.append(result)
        r = results[-1]
        print(f"  {r.label}: median {r.median_s:.3f} s, {r.peak_gib:.2f} GiB", flush=True)
    reference = dit_only(args) if args.dit_only else None

    print(f"\nconfig {args.config.name}  clip {args.frames}x{args.size[0]}x{args.size[1]}  {args.precision}  ZeRO-{args.zero_stage}  "
          f"checkpointing {args.checkpoint_mode or args.checkpoint_activations}  compile {args.compile}  steps {args.steps} (median of the last {args.steps - args.skip})")
    header = f"{'run':<44} {'step s':>8} {'min':>7} {'max':>7} {'peak GiB':>9} {'steps/s':>8} {'vs DiT-only':>11} {'final loss':>10}"
    print_header(header)
    for r in results:
        share = f"{reference[0] / r.median_s * 100:.1f}%" if reference else "-"
        print(f"{r.label:<44} {r.median_s:>8.3f} {r.min_s:>7.3f} {r.max_s:>7.3f} {r.peak_gib:>9.2f} {1 / r.median_s:>8.3f} {share:>11} {r.final_loss:>10.4f}")
    if reference:
        print(f"{'DiT alone (fwd+bwd, random latents)':<44} {reference[0]:>8.3f} {'':>7} {'':>7} {reference[1]:>9.2f} {1 / reference[0]:>8.3f} {'100%':>11}")
    for r in results:
        if r.setup_s:
            print(f"{r.label.split(', ')[-1]} build (once): {r.setup_s:.1f} s for the clips in {clips}")
    return results


if __name__ == "__main__":
    main()

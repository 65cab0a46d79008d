"""One LoRA training step on a batch of still images and one on a batch of video clips.

The engine of a shipped config (random DiT and VAE weights, the stand-in T5 of train_run.py),
LoRA on the attention, a torch AdamW over the LoRA weights: for each batch kind, warm-up steps
then timed steps of `shared_step` (VAE encode, T5, diffusion loss) + backward + optimizer step,
with the loss (finite), seconds per step and peak memory. Stills are one-frame clips (1 latent
frame), batched apart from clips, as training batches them (README: still images and mixed data).

    python benchmarks/mixed_step.py --config configs/cogvideox_2b_lora.yaml --lora-rank 128 \\
        --size 480 720 --frames 49 --image-batch 8 --video-batch 1 --precision bf16
    python benchmarks/mixed_step.py --tiny        # CPU smoke run (demo model)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from dit_step import DTYPES, measure, measuring_device, release  # noqa: E402
from train_run import make_assets  # noqa: E402


def build_engine(args: argparse.Namespace, t5: Path, vae: Path, device: torch.device, dtype: torch.dtype):
    from cogvideox_sat.engine import SATVideoDiffusionEngine

    cfg = OmegaConf.load(args.config).model
    cfg.conditioner_config.params.emb_models[0].params.model_dir = str(t5)
    cfg.first_stage_config.params.ckpt_path = str(vae)
    cfg.network_config.params.dtype = args.precision
    ta = cfg.network_config.params.setdefault("transformer_args", {})
    ta.checkpoint_activations = args.checkpoint
    if args.lora_rank:
        lora = cfg.network_config.params.modules.lora_config.params
        lora.r, lora.lora_alpha = args.lora_rank, args.lora_rank
    torch.manual_seed(0)
    engine = SATVideoDiffusionEngine(argparse.Namespace(model_config=cfg, fp16=args.precision == "fp16", bf16=args.precision == "bf16", device=str(device)))
    engine.disable_untrainable_params()
    return engine.to(device=device, dtype=dtype)


def batch_of(kind: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    n, frames = (args.image_batch, 1) if kind == "image" else (args.video_batch, args.frames)
    g = torch.Generator().manual_seed(1)
    mp4 = (torch.rand(n, frames, 3, *args.size, generator=g) * 2 - 1).to(device=device, dtype=dtype)
    return {"mp4": mp4, "txt": [f"a {kind} number {i}" for i in range(n)], "num_frames": torch.full((n,), frames), "fps": torch.full((n,), 8)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs/cogvideox_2b_lora.yaml")
    parser.add_argument("--lora-rank", type=int, default=128)
    parser.add_argument("--size", type=int, nargs=2, default=[480, 720])
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--image-batch", type=int, default=8)
    parser.add_argument("--video-batch", type=int, default=1)
    parser.add_argument("--precision", choices=list(DTYPES), default="bf16")
    parser.add_argument("--checkpoint", action=argparse.BooleanOptionalAction, default=True, help="activation checkpointing")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="demo model on the CPU, fp32, 9x64x96 clips")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.config, args.size, args.frames, args.precision, args.lora_rank = REPO / "configs/demo/tiny_t2v_lora.yaml", [64, 96], 9, "fp32", 4
        args.image_batch, args.warmup, args.steps = 2, 1, 2

    device, dtype = measuring_device(args.tiny), DTYPES[args.precision]
    work = args.work or Path(tempfile.mkdtemp(prefix="mixed_step_"))
    _, t5, vae = make_assets(args.config, work, work / "unused-clips", 1, args.size, n_clips=0)
    engine = build_engine(args, t5, vae, device, dtype)
    trainable = [p for p in engine.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    results: dict[str, dict[str, float]] = {}
    for kind in ("image", "video"):
        batch, losses = batch_of(kind, args, device, dtype), []

        def step() -> None:
            loss, _ = engine.shared_step(dict(batch))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))

        times, _, peak = measure(step, device, warmup=args.warmup, steps=args.steps)
        if not all(math.isfinite(v) for v in losses):
            raise SystemExit(f"{kind} batch: non-finite loss {losses}")
        shape = f"{batch['mp4'].shape[0]}x{batch['mp4'].shape[1]}x{args.size[0]}x{args.size[1]}"
        results[kind] = {"seconds": statistics.median(times), "peak_gib": peak, "loss": losses[-1]}
        print(f"{kind:<6} batch {shape:<16} step {results[kind]['seconds']:.3f} s  peak {peak:.2f} GiB  loss {losses[-1]:.4f}", flush=True)
        release(device)
    print(f"config {args.config.name}  LoRA r{args.lora_rank}  {args.precision}  checkpointing {args.checkpoint}  trainable {sum(p.numel() for p in trainable):,}")
    return results


if __name__ == "__main__":
    main()

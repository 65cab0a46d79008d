"""Data-parallel training through train_video.py under torchrun: N GPUs against 1, resume on another count.

Random weights, a stand-in T5 with the config's width (1 layer), the config's VAE with random
weights saved once, generated clips (benchmarks/train_run.py builds the overlay). Assets are
kept in --work and reused by later calls. Each mode launches
`torchrun --standalone --nproc_per_node=P train_video.py --base CONFIG OVERLAY`, as
finetune_multi_gpus.sh does, and reads the run's metrics.jsonl (rank 0's step time and peak
memory; the loss averaged over the ranks):

- `dp`: N processes x micro-batch M against 1 process x micro-batch M x N accumulation steps: the
  same global batch, so the losses agree in expectation (each rank draws its own noise, so they
  are not equal step by step; exact equality is what tests/parallel checks on CPU). Prints step
  time, samples/s, peak GiB, scaling efficiency t_1 / (N t_N) and the first losses.
- `resume`: N processes with a checkpoint at --save-at, run on to --steps; then the checkpoint
  resumes on N/2 processes with micro-batch 2M (the same global batch) through DeepSpeed's
  universal layout. Prints both runs' losses after the checkpoint side by side.
- `sft`: N processes, one run (e.g. 5B full fine-tuning, ZeRO-3, --offload): step time, samples/s,
  peak GiB, losses.

    python benchmarks/multi_gpu_train.py dp --gpus 8 --zero-stage 2 --steps 6 --baseline-steps 3
    python benchmarks/multi_gpu_train.py dp --gpus 8 --zero-stage 3
    python benchmarks/multi_gpu_train.py resume --gpus 8 --steps 6 --save-at 3
    python benchmarks/multi_gpu_train.py sft --gpus 8 --config configs/cogvideox_5b.yaml --zero-stage 3 --offload --steps 4
    python benchmarks/multi_gpu_train.py dp --tiny          # CPU: 2 gloo processes against 1, demo model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import train_run  # noqa: E402
from train_run import overlay  # noqa: E402

from cogvideox_sat.training.metrics import METRICS_FILE, losses_by_iteration, read_metrics  # noqa: E402


@dataclass
class Launch:
    label: str
    processes: int
    micro: int
    accumulation: int
    run_dir: Path
    output: str
    losses: dict[int, float] = field(default_factory=dict)
    step_s: list[float] = field(default_factory=list)
    peak_gib: float = float("nan")

    @property
    def global_batch(self) -> int:
        return self.processes * self.micro * self.accumulation

    def median_s(self, skip: int) -> float:
        timed = self.step_s[skip:] or self.step_s  # the first steps warm the allocator and kernels
        return statistics.median(timed) if timed else float("nan")


# ---------------------------------------------------------------- assets and launches


def make_assets(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(clips, T5 folder, VAE file) in --work, made once and reused by later calls."""
    # every rank needs samples of its own; 2 micro-batches per rank per epoch at most
    return train_run.make_assets(args.config, args.work, args.clips, args.frames, args.size, n_clips=max(8, 2 * args.gpus * args.micro))


def run_overlay(args: argparse.Namespace, assets: tuple[Path, Path, Path], save: Path, micro: int, accumulation: int,
                train_iters: int, save_interval: int | None = None) -> dict[str, Any]:
    """train_run.py's overlay with this launch's batch split, iterations and ZeRO settings."""
    clips, t5, vae = assets
    cfg = overlay(argparse.Namespace(**{**vars(args), "steps": train_iters}), save, clips, t5, vae, None)
    cfg["args"].update(save=str(save / "runs"), save_interval=save_interval or 10**9, experiment_name="multi-gpu")
    ds = cfg["deepspeed"]
    ds.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accumulation)
    if args.offload:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return cfg


def launch(args: argparse.Namespace, label: str, work: Path, cfg: dict[str, Any], processes: int, *flags: str) -> Launch:
    """train_video.py on `processes` processes (torchrun); raises with the log's tail when it fails."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "overlay.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           str(REPO / "train_video.py"), "--base", str(args.config), str(work / "overlay.yaml"), "--seed", "1", *flags]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")}
    if args.tiny:
        env["OMP_NUM_THREADS"] = "1"
        env.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed on the CPU even where a GPU is present
        env["CUDA_VISIBLE_DEVICES"] = ""
    print(f"+ {label}: {' '.join(cmd[2:6])} ... ({processes} processes)", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=args.launch_timeout)
    (work / "train.log").write_text(proc.stdout)
    if proc.returncode != 0:
        print(proc.stdout[-6000:])
        raise SystemExit(f"{label}: train_video.py failed with exit code {proc.returncode} (log {work / 'train.log'})")
    micro, accumulation = cfg["deepspeed"]["train_micro_batch_size_per_gpu"], cfg["deepspeed"]["gradient_accumulation_steps"]
    run_dir = Path(flags[flags.index("--resume") + 1]) if "--resume" in flags else only_run(Path(cfg["args"]["save"]))
    return with_metrics(Launch(label, processes, micro, accumulation, run_dir, proc.stdout))


def only_run(save: Path) -> Path:
    (run,) = [p for p in save.iterdir() if p.is_dir()]
    return run


def with_metrics(result: Launch) -> Launch:
    """Losses (the last logged per iteration: a resumed run logs again after its checkpoint), step times, peak."""
    records = read_metrics(result.run_dir)
    result.losses = losses_by_iteration(records)
    result.step_s = [r["step_s"] for r in records if "step_s" in r]
    result.peak_gib = max((r["max_mem_gib"] for r in records if "max_mem_gib" in r), default=float("nan"))
    return result


def rewind(run: Path, to: Path, tag: int) -> Path:
    """A copy of `run` whose last checkpoint is `tag` (later checkpoints and metrics dropped)."""
    shutil.copytree(run, to)
    for later in [p for p in to.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > tag]:
        shutil.rmtree(later)
    (to / "latest").write_text(str(tag))
    metrics = to / METRICS_FILE
    kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["iteration"] <= tag]
    metrics.write_text("".join(f"{line}\n" for line in kept))
    return to


# ---------------------------------------------------------------- modes


def data_parallel(args: argparse.Namespace, assets: tuple[Path, Path, Path]) -> list[Launch]:
    """N processes against 1 process accumulating N micro-batches: the same global batch."""
    n, m = args.gpus, args.micro
    tag = f"zero{args.zero_stage}"
    many = launch(args, f"{n} GPUs x micro {m}", args.work / f"dp-{tag}-{n}", run_overlay(args, assets, args.work / f"dp-{tag}-{n}", m, 1, args.steps), n)
    one = launch(args, f"1 GPU x micro {m} x {n} accumulation", args.work / f"dp-{tag}-1",
                 run_overlay(args, assets, args.work / f"dp-{tag}-1", m, n, args.baseline_steps), 1)
    t_n, t_1 = many.median_s(args.skip), one.median_s(min(args.skip, args.baseline_steps - 1))
    print(f"\n{args.config.name} {args.frames}x{args.size[0]}x{args.size[1]} {args.precision} ZeRO-{args.zero_stage}"
          f"{' offload' if args.offload else ''}, global batch {many.global_batch}, median step after {args.skip} warm-up steps")
    print("| run | global batch | step s | samples/s | peak GiB/GPU | efficiency | losses |")
    print("|---|---|---|---|---|---|---|")
    for r, t in ((one, t_1), (many, t_n)):
        eff = t_1 / (n * t_n) if r is many else 1.0
        print(f"| {r.label} | {r.global_batch} | {t:.3f} | {r.global_batch / t:.2f} | {r.peak_gib:.2f} | {eff:.2f} | "
              f"{' '.join(f'{r.losses[i]:.4f}' for i in sorted(r.losses)[:args.show_losses])} |")
    return [one, many]


def resume_other_count(args: argparse.Namespace, assets: tuple[Path, Path, Path]) -> list[Launch]:
    """Checkpoint on N processes, resume it on N/2 with twice the micro-batch (universal layout)."""
    n, m, at = args.gpus, args.micro, args.save_at
    if n < 2 or n % 2 or not 0 < at < args.steps:
        raise SystemExit(f"resume needs an even --gpus >= 2 and 0 < --save-at < --steps (got {n}, {at}, {args.steps})")
    straight = launch(args, f"{n} GPUs x micro {m}, straight", args.work / "resume-straight",
                      run_overlay(args, assets, args.work / "resume-straight", m, 1, args.steps, save_interval=at), n)
    again = rewind(straight.run_dir, args.work / "resume-other" / straight.run_dir.name, at)
    resumed = launch(args, f"{n // 2} GPUs x micro {2 * m}, resumed at {at}", again.parent,
                     run_overlay(args, assets, again.parent, 2 * m, 1, args.steps), n // 2, "--resume", str(again))
    converted = f"written by {n} processes, resuming on {n // 2}" in resumed.output
    print(f"\n{args.config.name} ZeRO-{args.zero_stage}: checkpoint at {at} on {n} processes, resumed on {n // 2} "
          f"(universal copy made: {converted and (again / 'universal' / str(at)).is_dir()})")
    print(f"| iteration | {straight.label} | {resumed.label} |")
    print("|---|---|---|")
    for i in sorted(straight.losses):
        other = resumed.losses.get(i)
        print(f"| {i} | {straight.losses[i]:.4f} | {'-' if other is None else f'{other:.4f}'} |")
    print(f"step s after the checkpoint: {n} GPUs {statistics.median(straight.step_s[at:]):.3f}, "
          f"{n // 2} GPUs {statistics.median(resumed.step_s[at:]):.3f}")
    return [straight, resumed]


def single_run(args: argparse.Namespace, assets: tuple[Path, Path, Path]) -> list[Launch]:
    """One N-process run (e.g. 5B SFT under ZeRO-3 with the optimizer in CPU memory)."""
    name = f"sft-zero{args.zero_stage}{'-offload' if args.offload else ''}-{args.gpus}"
    r = launch(args, f"{args.gpus} GPUs x micro {args.micro}", args.work / name, run_overlay(args, assets, args.work / name, args.micro, 1, args.steps), args.gpus)
    t = r.median_s(args.skip)
    print(f"\n{args.config.name} {args.frames}x{args.size[0]}x{args.size[1]} {args.precision} ZeRO-{args.zero_stage}"
          f"{' + offload_optimizer' if args.offload else ''}: {r.label}, global batch {r.global_batch}")
    print(f"step {t:.3f} s (median after {args.skip}), {r.global_batch / t:.2f} samples/s, peak {r.peak_gib:.2f} GiB/GPU (rank 0), "
          f"step times {r.step_s}, losses {[round(r.losses[i], 4) for i in sorted(r.losses)]}")
    return [r]


MODES = {"dp": data_parallel, "resume": resume_other_count, "sft": single_run}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--gpus", type=int, default=None, help="processes of the multi-GPU run (default: all visible GPUs)")
    p.add_argument("--config", type=Path, default=None, help="default configs/cogvideox_2b_lora.yaml (--tiny: configs/demo/tiny_t2v_lora.yaml)")
    p.add_argument("--micro", type=int, default=1, help="micro-batch per GPU of the N-GPU run")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--baseline-steps", type=int, default=3, help="steps of the 1-GPU run (each is N micro-batches)")
    p.add_argument("--skip", type=int, default=2, help="first steps left out of the median")
    p.add_argument("--save-at", type=int, default=3, help="resume: the checkpoint the other count resumes from")
    p.add_argument("--show-losses", type=int, default=4)
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--size", type=int, nargs=2, default=[480, 720])
    p.add_argument("--zero-stage", type=int, default=2)
    p.add_argument("--offload", action="store_true", help="zero_optimization.offload_optimizer: cpu (DeepSpeedCPUAdam)")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--checkpoint-activations", choices=["true", "false"], default="true")
    p.add_argument("--checkpoint-mode", choices=["full", "selective", "selective_mlp_out", "selective_matmul", "none"], default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--clips", type=Path, default=None)
    p.add_argument("--work", type=Path, default=None, help="assets and runs (default: a new temporary folder)")
    p.add_argument("--launch-timeout", type=float, default=None, help="seconds per train_video.py launch")
    p.add_argument("--tiny", action="store_true", help="demo model on the CPU (gloo), 9x64x96 clips, fp32")
    args = p.parse_args(argv)
    if args.tiny:
        args.config = args.config or REPO / "configs/demo/tiny_t2v_lora.yaml"
        args.frames, args.size, args.precision, args.num_workers = 9, [64, 96], "fp32", 0
        args.steps, args.baseline_steps, args.skip, args.save_at = min(args.steps, 3), min(args.baseline_steps, 2), 1, min(args.save_at, 2)
        args.zero_stage = max(args.zero_stage, 1)  # DeepSpeed on the CPU needs ZeRO >= 1
    if args.gpus is None:
        import torch

        args.gpus = 2 if args.tiny or not torch.cuda.is_available() else torch.cuda.device_count()
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="multi_gpu_"))).resolve()
    args.config = (args.config or REPO / "configs/cogvideox_2b_lora.yaml").resolve()
    return args


def main(argv: list[str] | None = None) -> list[Launch]:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    return MODES[args.mode](args, make_assets(args))


if __name__ == "__main__":
    main()

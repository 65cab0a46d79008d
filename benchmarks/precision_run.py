"""fp16 / bf16 training of the 2B (and 5B LoRA) model through train_video.py: numbers that stay finite.

For each case (2B LoRA, 2B full fine-tune, 5B LoRA; fp16 or bf16; optionally FP8 base storage and
another seed), one train_video.py run on generated clips (the demo clips at the training size),
random weights, ZeRO-2, the official
optimizer `sat.ops.FusedEmaAdam` (AdamW + our EMA) and the official dynamic loss scaling for fp16
(`loss_scale: 0`, window 400, hysteresis 2, min 1, placed under `deepspeed.fp16` where DeepSpeed
reads them). Reported per run: losses finite, the last loss, loss scale (first / last / lowest),
steps skipped for overflow, EMA updates, and whether every tensor of the last checkpoint and of
its `-ema` twin is finite. Assets and the run folders are built with benchmarks/train_run.py's
helpers.

    python benchmarks/precision_run.py --cases 2b_lora:fp16 2b_lora:bf16 --steps 300
    python benchmarks/precision_run.py --cases 2b_sft:fp16 2b_sft:bf16 --steps 300
    python benchmarks/precision_run.py --cases 5b_lora:bf16 5b_lora:bf16+store8 5b_lora:bf16@2 --steps 100 --frames 13
    python benchmarks/precision_run.py --tiny   # CPU smoke run (bf16 / fp32 only: DeepSpeed has no CPU fp16)

`--data cache` encodes the clips once (tools/build_latent_cache.py) and trains the transformer on
the cached latents, so the steps measure the DiT's numerics, not the VAE's time; `--parallel` runs
the cases at the same time (one GPU holds two 2B LoRA runs; step times are then shared);
`--summary FILE` writes every case's per-step losses, loss scales and step times as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import print_header  # noqa: E402
from train_run import build_cache, make_assets, overlay  # noqa: E402

from cogvideox_sat.io.sat_checkpoint import read_module_state  # noqa: E402
from cogvideox_sat.models.attention import BACKENDS  # noqa: E402
from cogvideox_sat.training.metrics import read_metrics, step_records  # noqa: E402
from cogvideox_sat.training.preemption import EXIT_SAVED_ON_SIGNAL  # noqa: E402

CONFIGS = {"2b_lora": REPO / "configs/cogvideox_2b_lora.yaml", "2b_sft": REPO / "configs/cogvideox_2b.yaml",
           "5b_lora": REPO / "configs/cogvideox_5b_lora.yaml"}
LR = {"2b_lora": 1e-3, "2b_sft": 1e-5, "5b_lora": 1e-3}  # the official sft.yaml's advice for LoRA and full fine-tuning
FP8_RECIPES = {"fp8": "tensorwise", "fp8row": "rowwise"}  # case variant -> transformer_args.fp8
OFFICIAL_FP16 = {"loss_scale": 0, "loss_scale_window": 400, "hysteresis": 2, "min_loss_scale": 1}


@dataclass
class Outcome:
    case: str
    steps: int
    finite: bool
    last_loss: float
    scales: list[float]
    overflow: int
    ema_updates: int
    weights_finite: bool | None  # None: the run was stopped before its final checkpoint
    ema_finite: bool | None
    losses: list[float]
    step_s: float
    peak_gib: float
    sample: str | None = None  # contact sheet of the last iteration's validation sample (--sample)


def case_overlay(args: argparse.Namespace, name: str, precision: str, work: Path, clips: Path, t5: Path, vae: Path,
                 cache: Path | None = None) -> dict[str, Any]:
    precision, _, variant = precision.partition("+")
    ns = argparse.Namespace(**{**vars(args), "config": CONFIGS[name] if not args.tiny else args.config, "precision": precision})
    cfg = overlay(ns, work, clips, t5, vae, cache)
    transformer_args = cfg["model"]["network_config"]["params"]["transformer_args"]
    transformer_args["attention_backend"] = args.attention_backend
    if variant == "store8":  # FP8 storage of the frozen base (LoRA only)
        transformer_args["fp8_base_storage"] = True
    elif variant in FP8_RECIPES:  # FP8 projection matmuls (torchao)
        transformer_args["fp8"] = FP8_RECIPES[variant]
    elif variant:
        raise SystemExit(f"case variant +{variant}: the variants are +store8, {', '.join('+' + v for v in FP8_RECIPES)}")
    cfg["args"]["save_interval"] = args.steps  # one checkpoint (weights + EMA) at the end, checked for NaN
    if args.sample:  # one validation sample at the last step: seed args.seed + 0, the first clip's caption
        cfg["args"].update({"eval_interval": args.steps, "eval_iters": 1, "eval_batch_size": 1, "valid_data": [str(clips)]})
    ds = cfg["deepspeed"]
    ds["optimizer"] = {"type": "sat.ops.FusedEmaAdam",
                       "params": {"lr": LR[name], "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-4, "ema_decay": args.ema_decay}}
    ds["gradient_clipping"] = 0.1  # official sft.yaml
    if precision == "fp16":
        ds["fp16"] = {"enabled": True, **OFFICIAL_FP16}
    return cfg


def all_finite(path: Path) -> bool:
    import torch

    module = read_module_state(path)
    return bool(module) and all(torch.isfinite(v).all() for v in module.values() if v.is_floating_point())


def finite_if_written(path: Path) -> bool | None:
    """`all_finite` of a model-states file of a run stopped while saving; None where the file is
    absent or cut short (a torch zip archive is readable only once its last byte is written)."""
    if not path.is_file():
        return None
    try:
        return all_finite(path)
    except (RuntimeError, EOFError, OSError):
        return None


def parse_case(case: str) -> tuple[str, str, int]:
    """`<model>:<precision>[+variant][@seed]` -> (model, precision, seed); the seed defaults to 1."""
    spec, _, seed = case.partition("@")
    name, _, precision = spec.partition(":")
    if name not in CONFIGS or not precision:
        raise SystemExit(f"case {case!r}: expected <{'|'.join(CONFIGS)}>:<fp16|bf16>[+store8|+fp8|+fp8row][@seed]")
    return name, precision, int(seed or 1)


def start_case(args: argparse.Namespace, case: str, work: Path, assets: tuple[Path, Path, Path], cache: Path | None,
               resume: Path | None = None) -> subprocess.Popen:
    """Launch one case's train_video.py run (output in `work`/train.log); `resume`: a run folder of
    this case to continue (`--resume`: weights, optimizer, EMA, RNG and data position)."""
    name, precision, seed = parse_case(case)
    work.mkdir(parents=True, exist_ok=True)
    (work / "overlay.yaml").write_text(yaml.safe_dump(case_overlay(args, name, precision, work, *assets, cache=cache)))
    config = args.config if args.tiny else CONFIGS[name]
    cmd = [sys.executable, str(REPO / "train_video.py"), "--base", str(config), str(work / "overlay.yaml"), "--seed", str(seed)]
    cmd += ["--resume", str(resume)] if resume is not None else []
    log = (work / "train.log").open("a" if resume is not None else "w")
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop_runs(procs: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM to every run still going, which train_video.py answers by saving the step it reached
    and exiting with 75; those not gone after `grace_s` are killed (then `latest` still names their
    previous save). One signal each: a second would end a run mid-save."""
    alive = [p for p in procs if p.poll() is None]
    for proc in alive:
        proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace_s
    for proc in alive:
        try:
            proc.wait(timeout=max(end - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_case(case: str, work: Path, proc: subprocess.Popen, deadline: float | None,
              progress_s: float | None = None, report: Callable[[], None] | None = None,
              stop: Callable[[], None] | None = None) -> bool:
    """Wait for one run; False if `deadline` (time.monotonic) passed first and the run was stopped
    by `stop` (which stops every run at once; default: this one, killed). Every `progress_s`
    seconds of waiting `report` prints where the runs are, so a device call that is cut off still
    shows where its time went. A run that fails on its own stops the whole benchmark with the end
    of its log."""
    while True:
        timeouts = [t for t in (progress_s, None if deadline is None else max(deadline - time.monotonic(), 0.0)) if t is not None]
        try:
            proc.wait(timeout=min(timeouts) if timeouts else None)
            break
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                (stop or (lambda: stop_runs([proc], 0.0)))()
                break
            if report is not None:
                report()
    budget_spent = deadline is not None and time.monotonic() >= deadline
    if proc.returncode == EXIT_SAVED_ON_SIGNAL or (proc.returncode != 0 and budget_spent):  # our stop, or a signal from outside
        why = "at the time budget (--budget-s)" if budget_spent else "by a signal"
        saved = "saved its step (--reuse resumes it)" if proc.returncode == EXIT_SAVED_ON_SIGNAL else "killed before saving"
        print(f"  {case}: stopped {why}, {saved}; reporting the steps it logged", flush=True)
        return False
    if proc.returncode != 0:
        print((work / "train.log").read_text()[-6000:])
        raise SystemExit(f"{case}: train_video.py failed with exit code {proc.returncode} (log: {work / 'train.log'})")
    return True


def progress_line(case: str, work: Path) -> str:
    """Where one running case is: its last logged step, or while it sets up the last line of its log."""
    runs = _run_dirs(work)
    try:
        records = step_records(read_metrics(runs[0])) if len(runs) == 1 else []
    except OSError:  # not written yet
        records = []
    if records:
        last = records[-1]
        return f"{case}: step {last['iteration']}, loss {last['loss']:.4f}" + (f", {last['step_s']:.2f} s/step" if "step_s" in last else "")
    log = work / "train.log"
    lines = [line.strip() for line in log.read_text(errors="replace").replace("\r", "\n").splitlines() if line.strip()] if log.is_file() else []
    return f"{case}: setting up" + (f" ({lines[-1][:120]})" if lines else "")


class Clock:
    """Seconds since the benchmark started, stamped on its phase and progress lines."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.0f} s] {message}", flush=True)


def case_name(case: str) -> str:
    """A case as a file name: its work folder's, and its sample copy's suffix."""
    return case.replace(":", "_").replace("@", "_seed")


def sample_copy(summary: Path, case: str) -> Path:
    """Where a case's validation sample is copied beside the summary: `<summary stem>-<case>.png`."""
    return summary.with_name(f"{summary.stem}-{case_name(case)}.png")


def drop_optimizer_states(work: Path) -> None:
    """Delete a finished case's optimizer states (~20 GB for a 2B full fine-tune): only its metrics
    and model states are read again, and the next case's final save must fit the disk beside them."""
    for path in work.glob("runs/*/*/*optim_states.pt"):
        path.unlink()


def _run_dirs(work: Path) -> list[Path]:
    """The run folders train_video.py made under a case's work folder (one per case)."""
    return [p for p in (work / "runs").iterdir() if p.is_dir()] if (work / "runs").is_dir() else []


def completed_run(work: Path, steps: int) -> bool:
    """Whether `work` holds one finished run of `steps` steps (its final checkpoint written)."""
    runs = _run_dirs(work)
    return len(runs) == 1 and (runs[0] / "latest").is_file() and (runs[0] / "latest").read_text().strip() == str(steps)


def resumable_run(work: Path) -> Path | None:
    """The run folder of a case stopped after a checkpoint (e.g. at an earlier call's --budget-s),
    which `--reuse` continues instead of starting again; None where there is none."""
    runs = _run_dirs(work)
    return runs[0] if len(runs) == 1 and (runs[0] / "latest").is_file() else None


def read_outcome(case: str, work: Path, complete: bool) -> Outcome | None:
    """The run's numbers from its metrics.jsonl; the validation sample only if it completed (None
    if it logged no step). A run stopped while writing its final checkpoint still has that
    checkpoint's weights and EMA checked, each where its file was completely written."""
    runs = _run_dirs(work)
    records = step_records(read_metrics(runs[0])) if len(runs) == 1 else []
    if not records:
        return None
    run_dir, last = runs[0], records[-1]
    tag = (run_dir / "latest").read_text().strip() if complete else None
    check = all_finite if complete else finite_if_written
    checked = tag or str(last.get("iteration", ""))  # a stopped run: the save of its last logged step, if any
    steps = [r["step_s"] for r in records[3:] if "step_s" in r]  # the median: a resumed run's slow first steps barely move it
    sheets = sorted((run_dir / "samples" / f"iter_{int(tag):06d}").glob("*/0/000000.png")) if tag and tag.isdigit() else []
    return Outcome(
        case, len(records), all(math.isfinite(r["loss"]) for r in records), last["loss"],
        [r["loss_scale"] for r in records if "loss_scale" in r], int(last.get("overflow_skipped", 0)), int(last.get("ema_updates", 0)),
        check(run_dir / checked / "mp_rank_00_model_states.pt") if checked else None,
        check(run_dir / f"{checked}-ema" / "mp_rank_00_model_states.pt") if checked else None,
        [float(r["loss"]) for r in records], statistics.median(steps) if steps else float("nan"),
        max((r["max_mem_gib"] for r in records if "max_mem_gib" in r), default=float("nan")),
        str(sheets[0]) if sheets else None,
    )


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else str(flag)


def sample_psnr(sample: str | None, reference: str | None) -> float:
    """PSNR (dB) of one validation contact sheet (all frames, uint8, lossless) against another."""
    import numpy as np
    from PIL import Image

    if sample is None or reference is None:
        return float("nan")
    a, b = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in (sample, reference))
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _sample_column(outcome: Outcome, first: Outcome) -> str:
    """The sample PSNR cell: only runs of the first case's seed drew the same caption with the
    same noise (validation samples use the run's seed and its shuffled validation order)."""
    if parse_case(outcome.case)[2] != parse_case(first.case)[2]:
        return "-"
    return f"{sample_psnr(outcome.sample, first.sample):.2f}"


class Interrupted(Exception):
    """SIGTERM (e.g. `timeout`): stop the runs, report what they logged, exit non-zero."""


def _exit_on_term(signum: int, frame: object) -> None:
    raise Interrupted(f"precision_run: signal {signum}")


def main(argv: list[str] | None = None) -> list[Outcome]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=None,
                        help="<2b_lora|2b_sft|5b_lora>:<fp16|bf16>[+store8|+fp8|+fp8row][@seed] (each one train_video.py run; +store8: "
                             "fp8_base_storage; +fp8 / +fp8row: transformer_args.fp8 tensorwise / rowwise; "
                             "@seed: the run's --seed, default 1: same seed = same noise, timesteps and data order)")
    parser.add_argument("--checkpoint-mode", choices=["full", "selective"], default="full",
                        help="selective keeps the attention outputs (same numbers as full, fewer recomputed FLOPs)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per case (300; --tiny: 4)")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--size", type=int, nargs=2, default=[480, 720])
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--ema-decay", type=float, default=0.9999)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--clips", type=Path, default=None, help="folder of videos/ + labels/ (generated if absent)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--data", choices=["pixels", "cache"], default="pixels", help="cache: latents encoded once, DiT-only steps")
    parser.add_argument("--parallel", action="store_true", help="run the cases at the same time")
    parser.add_argument("--summary", type=Path, default=None,
                        help="JSON file for per-step losses, scales, step times; with --sample, each case's sample is copied beside it")
    parser.add_argument("--compile", action="store_true", help="transformer_args.compile (what fp8 is meant to run with)")
    parser.add_argument("--attention-backend", choices=BACKENDS, default=None,
                        help="transformer_args.attention_backend of every case (default cudnn; --tiny: torch). Pinned rather than auto, so "
                             "that a run resumed after FlashAttention-4 was installed on the machine keeps its kernel")
    parser.add_argument("--sample", action="store_true",
                        help="each run draws one validation sample at its last step (same prompt and seed in every case); "
                             "the table gives each sample's PSNR against the first case's")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of every case's loss curve, overlaid")
    parser.add_argument("--reuse", action="store_true",
                        help="a case whose work folder holds a finished run of --steps steps is read, not run again, and "
                             "one stopped after a checkpoint (--budget-s) is resumed (split cases over several device "
                             "calls on one machine, then compare them in one table)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="after this many seconds the runs still going get SIGTERM: each saves the step it reached "
                             "(--reuse resumes it) and the steps they logged are reported (of a final checkpoint cut "
                             "short, only the completely written weights / EMA files are checked)")
    parser.add_argument("--stop-grace-s", type=float, default=60.0,
                        help="seconds a run stopped at --budget-s gets to save before it is killed; keep --budget-s + "
                             "this inside the machine's time limit")
    parser.add_argument("--progress-s", type=float, default=30.0,
                        help="print each running case's last step (or, while it sets up, its log's last line) this often")
    parser.add_argument("--tiny", action="store_true", help="demo LoRA model on the CPU, bf16, 4 steps unless --steps")
    args = parser.parse_args(argv)
    args.checkpoint_activations = "true"  # train_run.overlay's knob: official checkpointing
    args.config = REPO / "configs/demo/tiny_t2v_lora.yaml"
    args.steps = args.steps or (4 if args.tiny else 300)
    if args.tiny:
        args.frames, args.size = 5, [32, 64]  # bf16 convolutions are emulated on most CPUs
        args.cases = args.cases or ["2b_lora:bf16"]  # every case trains the demo LoRA model here
    args.attention_backend = args.attention_backend or ("torch" if args.tiny else "cudnn")
    args.cases = args.cases or ["2b_lora:fp16", "2b_lora:bf16", "2b_sft:fp16", "2b_sft:bf16"]
    work = args.work or Path(tempfile.mkdtemp(prefix="precision_run_"))

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_term)
    deadline = None if args.budget_s is None else time.monotonic() + args.budget_s
    jobs: list[tuple[str, Path, subprocess.Popen | None]] = []
    done: dict[str, bool] = {}
    interrupted: Interrupted | None = None
    clock = Clock()

    def stop() -> None:  # at the budget: every run saves and exits together
        stop_runs([proc for _, _, proc in jobs if proc is not None], args.stop_grace_s)

    def report() -> None:
        for case, case_work, proc in jobs:
            if proc is not None and proc.poll() is None:
                clock.say(progress_line(case, case_work))

    try:
        for case in args.cases:
            case_work = work / case_name(case)
            if args.reuse and completed_run(case_work, args.steps):
                print(f"  {case}: reusing its finished run in {case_work}", flush=True)
                jobs.append((case, case_work, None))
                done[case] = True
                continue
            resume = resumable_run(case_work) if args.reuse else None
            if deadline is not None and time.monotonic() >= deadline:  # before building its assets and cache
                print(f"  {case}: not started (time budget spent)", flush=True)
                continue
            config = args.config if args.tiny else CONFIGS[parse_case(case)[0]]
            assets = make_assets(config, work, args.clips, args.frames, args.size, n_clips=4)
            clock.say(f"{case}: assets ready (clips, tokenizer, T5, VAE)")
            cache = None
            if args.data == "cache":
                cache = work / f"cache-{Path(config).stem}-{args.frames}x{args.size[0]}x{args.size[1]}"
                if not cache.is_dir():
                    ns = argparse.Namespace(**{**vars(args), "config": Path(config), "precision": "bf16"})
                    build_cache(ns, work / "cache_build", overlay(ns, work / "cache_build", *assets, None), cache)
                    clock.say(f"latent cache built: {cache}")
            if resume is None:
                shutil.rmtree(case_work / "runs", ignore_errors=True)  # one run folder per case
            jobs.append((case, case_work, start_case(args, case, case_work, assets, cache, resume)))
            started = f"resumed from {resume / (resume / 'latest').read_text().strip()}" if resume else "started"
            clock.say(f"{case}: train_video.py {started} (log: {case_work / 'train.log'})")
            if not args.parallel:
                done[case] = wait_case(case, case_work, jobs[-1][2], deadline, args.progress_s, report, stop)
                clock.say(f"{case}: {'finished' if done[case] else 'stopped'}")
                if done[case]:
                    drop_optimizer_states(case_work)
        for case, case_work, proc in jobs:
            if case not in done:
                done[case] = wait_case(case, case_work, proc, deadline, args.progress_s, report, stop)
                clock.say(f"{case}: {'finished' if done[case] else 'stopped'}")
    except Interrupted as signalled:
        interrupted = signalled
    finally:  # a timeout or failure must not leave training runs holding the GPU
        stop()
    outcomes = [o for case, case_work, _ in jobs if (o := read_outcome(case, case_work, done.get(case, False))) is not None]
    for o in outcomes:
        print(f"  {o.case}: {o.steps} steps, last loss {o.last_loss:.4f}, overflow skipped {o.overflow}", flush=True)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps([vars(o) for o in outcomes], indent=1))
        for o in outcomes:  # every run's sample names the same file inside its run folder
            if o.sample is not None:
                shutil.copyfile(o.sample, sample_copy(args.summary, o.case))
    if args.plot and outcomes:
        from loss_plot import plot_losses

        plot_losses({o.case: o.losses for o in outcomes}, args.plot, f"loss per step, {args.frames}x{args.size[0]}x{args.size[1]}, "
                    f"bold: mean of the last 20 steps")
        print(f"loss curves: {args.plot}")

    models = sorted({parse_case(c)[0] for c in args.cases}) if not args.tiny else ["demo LoRA"]
    print(f"\n{', '.join(models)}, clip {args.frames}x{args.size[0]}x{args.size[1]}, ZeRO-{args.zero_stage}, FusedEmaAdam (ema_decay {args.ema_decay}), "
          f"{args.steps} steps, generated clips, random weights")
    header = (f"{'case':<14} {'steps':>5} {'loss finite':>11} {'loss first/last 20':>19} {'scale first/last/min':>24} {'overflow':>8} "
              f"{'EMA upd':>7} {'weights ok':>10} {'EMA ok':>6} {'step s':>7} {'peak GiB':>8} {'last 50':>7}"
              + (f" {'sample PSNR':>11}" if args.sample else ""))
    print_header(header)
    for o in outcomes:
        scale = f"{o.scales[0]:g}/{o.scales[-1]:g}/{min(o.scales):g}" if o.scales else "-"
        window = min(20, len(o.losses))
        trend = f"{statistics.fmean(o.losses[:window]):.4f}/{statistics.fmean(o.losses[-window:]):.4f}"
        print(f"{o.case:<14} {o.steps:>5} {str(o.finite):>11} {trend:>19} {scale:>24} {o.overflow:>8} {o.ema_updates:>7} "
              f"{_yes(o.weights_finite):>10} {_yes(o.ema_finite):>6} {o.step_s:>7.3f} {o.peak_gib:>8.2f} {statistics.fmean(o.losses[-50:]):>7.4f}"
              + (f" {_sample_column(o, outcomes[0]):>11}" if args.sample else ""))
    if any(o.weights_finite is None or o.ema_finite is None for o in outcomes):
        print("weights ok / EMA ok '-': the run was stopped before that file of its final checkpoint was written, so it was not checked")
    if args.sample and outcomes:
        print(f"sample PSNR: dB of each case's last validation sample (all frames) against {outcomes[0].case}'s "
              f"(inf: identical; '-': another seed, so another caption and noise); samples: {[o.sample for o in outcomes]}")
    failed = [o.case for o in outcomes if False in (o.finite, o.weights_finite, o.ema_finite)]
    if failed:
        raise SystemExit(f"non-finite numbers in {failed}")
    if interrupted is not None:
        raise SystemExit(str(interrupted))
    return outcomes


if __name__ == "__main__":
    main()

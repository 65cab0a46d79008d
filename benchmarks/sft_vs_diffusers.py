"""Ours vs diffusers: full fine-tuning steps under DeepSpeed ZeRO-2 on one GPU, optimizer included.

For each model (2B / 5B full fine-tuning; LoRA entries work too) this wraps diffusers'
`CogVideoXTransformer3DModel` (gradient checkpointing on, as its training scripts set it up) and our
`DiffusionTransformer` with each `--ours` setting in `deepspeed.initialize`, with the DeepSpeed
section of configs/sft.yaml (ZeRO-2, bf16, AdamW) at micro-batch 1 and gradient clipping 1.0. It
times forward+backward (`engine(...)`, `engine.backward(loss)`) and the optimizer step
(`engine.step()`) apart, on the inputs and loss of benchmarks/vs_diffusers.py (random weights,
batch 1, 49x480x720 -> 13x60x90 latents, mean square of the prediction). Peak memory is the GPU's
over the timed steps: weights, gradients, optimizer states (unless offloaded), DeepSpeed's gradient
buckets and activations.

    python benchmarks/sft_vs_diffusers.py --models 2b-full                # FusedAdam on the GPU
    python benchmarks/sft_vs_diffusers.py --models 5b-full --offload      # Adam states in CPU memory
    python benchmarks/sft_vs_diffusers.py --tiny                          # CPU smoke: toy sizes, gloo, torch AdamW
                                                                          # (DS_ACCELERATOR=cpu where a GPU is visible)

5B needs --offload on an 80 GB GPU: bf16 weights and gradients, float32 master weights and the two
Adam moments are 16 bytes a parameter, 90 GB for 5.6B parameters; with --offload the master weights,
their gradients and the moments live in CPU memory and DeepSpeedCPUAdam steps them. Unpinned by
default (--pin-memory pins): torch's pinned-memory allocator rounds each allocation up to a power
of two, so DeepSpeed's two flat 22 GB float32 buffers of 5B take 64 GB pinned and the case is
killed on a 128 GB host. The process is a one-rank
world (NCCL, or gloo on CPU), set up as train_video.py sets it up. Every case is built, measured and
freed before the next; a failed case (out of memory) is reported in the table and the run goes on;
no case starts after --budget-s. "fwd+bwd/diff" is the forward+backward time over diffusers'; TFLOP/s
counts forward+backward model FLOPs as benchmarks/dit_step.py does; "1st s" is the first warm-up step
(compilation, optimizer-state allocation included).

With --offload (or --isolate) every case runs in a child process of its own (this script again, with
the hidden `--only-case MODEL IMPL SETTING --json-out FILE`): ZeRO-Offload's pinned CPU buffers are
not handed back to the OS by `engine.destroy()`, so a second offloaded case in the same process
would need twice the host memory. A child the kernel kills (SIGKILL: the host's OOM killer) becomes
a FAILED row and the run goes on; "host GiB" is a child's resident-memory high-water mark (VmHWM).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vs_diffusers  # noqa: E402
from common import print_header, synchronize  # noqa: E402
from dit_step import DTYPES, Setting, measure, parse_setting, release  # noqa: E402
from vs_diffusers import Row, build_case, case_label, error_text, loss_of  # noqa: E402

from cogvideox_sat.training.main import optimizer_config, param_groups  # noqa: E402
from cogvideox_sat.training.setup import init_distributed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclass
class SFTRow(Row):
    """A table row; `seconds` is forward+backward, `step_seconds` the optimizer step."""

    step_seconds: float = float("nan")
    step_std: float = 0.0
    host_gib: float = float("nan")  # the case's own process's peak resident memory (isolated cases only)


# ---- DeepSpeed ----------------------------------------------------------------------------------
def ds_config(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """configs/sft.yaml's DeepSpeed section for one micro-batch of 1, clipping 1.0 and this run's
    precision, with the optimizer made runnable on `device` as training does (torch AdamW on CPU)."""
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "sft.yaml").deepspeed, resolve=True)
    cfg.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1, gradient_clipping=1.0, steps_per_print=10**9)
    cfg["bf16"] = {"enabled": args.dtype == "bf16"}
    cfg["fp16"] = {"enabled": args.dtype == "fp16"}
    cfg = optimizer_config(cfg, device)
    if args.offload:
        cfg["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": args.pin_memory}
        cfg["optimizer"]["params"].pop("torch_adam", None)  # offloaded states are stepped by DeepSpeedCPUAdam only
    return cfg


def join_one_rank_world(device: torch.device) -> None:
    """A one-process group and DeepSpeed's communication, as a plain `python train_video.py` gets."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if device.type == "cpu" and get_accelerator().device_name() != "cpu":
        raise SystemExit("--tiny runs DeepSpeed on the CPU: set DS_ACCELERATOR=cpu on a machine with a GPU")
    init_distributed(argparse.Namespace(device="cpu" if device.type == "cpu" else None, local_rank=0, rank=0, world_size=1, model_parallel_size=1))
    deepspeed.utils.logger.setLevel(logging.WARNING)  # its per-engine INFO lines would bury the table


# ---- one case -----------------------------------------------------------------------------------
def run_case(name: str, impl: str, setting: Setting | None, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> SFTRow:
    row = SFTRow(name, impl, case_label(setting, args))
    try:
        measure_case(row, args, device, dtype, setting)
    except Exception as err:  # report and go on: one device run must not lose the other cases
        traceback.print_exc()
        row.error = error_text(err)
    release(device)  # after the except block, so the traceback no longer holds the engine
    summary = row.error or f"fwd+bwd {row.seconds:.3f} s, step {row.step_seconds:.3f} s, peak {row.peak_gib:.1f} GiB, first step {row.first_step:.1f} s"
    if device.type == "cuda" and torch.cuda.memory_allocated(device) > 2**30:  # a leak would inflate the next case's peak
        summary += f"; {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB still allocated after freeing"
    print(f"  {row.model:<8} {row.impl:<9} {row.setting:<28} {summary}", flush=True)
    return row


def measure_case(row: SFTRow, args: argparse.Namespace, device: torch.device, dtype: torch.dtype, setting: Setting | None) -> None:
    """Fill `row` with forward+backward and optimizer-step times of one model under ZeRO-2."""
    import deepspeed

    model, kwargs, context, flops = build_case(row.model, row.impl, setting, args, device, dtype)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model), config=ds_config(args, device), dist_init_required=False)
    del model  # the engine holds it; its weights are now views into ZeRO's flat buffer
    fwd_bwd: list[float] = []
    opt_step: list[float] = []

    def step() -> None:
        start = time.perf_counter()
        with context():
            engine.backward(loss_of(engine, kwargs, row.impl == "diffusers"))
        synchronize(device)
        middle = time.perf_counter()
        engine.step()
        synchronize(device)
        fwd_bwd.append(middle - start)
        opt_step.append(time.perf_counter() - middle)

    try:
        _, row.first_step, row.peak_gib = measure(step, device, args.warmup, args.steps)
    finally:
        engine.destroy()  # hooks and pinned buffers would otherwise outlive the case
    timed, timed_step = fwd_bwd[args.warmup:], opt_step[args.warmup:]
    row.seconds, row.std = statistics.mean(timed), statistics.pstdev(timed)
    row.step_seconds, row.step_std = statistics.mean(timed_step), statistics.pstdev(timed_step)
    row.tflops = flops / row.seconds / 1e12


# ---- one case per process ----------------------------------------------------------------------
def child_command(argv: list[str], name: str, impl: str, setting: Setting | None, json_out: Path) -> list[str]:
    """This script with the parent's options, restricted to one case whose row goes to `json_out`."""
    label = setting.label if setting else "-"
    return [sys.executable, str(Path(__file__).resolve()), *argv, "--only-case", name, impl, label, "--json-out", str(json_out)]


def run_case_in_child(name: str, impl: str, setting: Setting | None, args: argparse.Namespace, argv: list[str]) -> SFTRow:
    """One case in a fresh process, so whatever it leaves in host memory dies with it."""
    with tempfile.TemporaryDirectory() as tmp:
        json_out = Path(tmp) / "row.json"
        child = subprocess.Popen(child_command(argv, name, impl, setting, json_out))
        try:
            _, status, usage = os.wait4(child.pid, 0)  # wait4, not wait: a killed child's memory peak too
        except BaseException:  # Ctrl-C: do not leave the child running on the GPU
            child.kill()
            child.wait()
            raise
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode == 0 and json_out.exists():
            return SFTRow(**json.loads(json_out.read_text()))
    # ru_maxrss also counts the parent's resident pages the child was spawned with: far fewer than a case's
    row = SFTRow(name, impl, case_label(setting, args), host_gib=usage.ru_maxrss / 2**20)
    row.error = f"{child_failure(child.returncode)}, host peak {row.host_gib:.1f} GiB"
    print(f"  {row.model:<8} {row.impl:<9} {row.setting:<28} {row.error}", flush=True)
    return row


def child_failure(returncode: int) -> str:
    if returncode == -signal.SIGKILL:  # what the kernel's OOM killer sends
        return "killed (host out of memory?)"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"child exited with status {returncode} without a row (its output is above)"


def run_only_case(args: argparse.Namespace) -> SFTRow:
    """The child's side of --only-case: measure one case in this process, write its row to --json-out."""
    name, impl, label = args.only_case
    device = vs_diffusers.run_device(args)
    join_one_rank_world(device)
    row = run_case(name, impl, None if impl == "diffusers" else parse_setting(label), args, device, DTYPES[args.dtype])
    row.host_gib = host_peak_gib()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(dataclasses.asdict(row)))
    return row


def host_peak_gib() -> float:
    """This process's resident-memory high-water mark (Linux's VmHWM); NaN where /proc has none."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return float("nan") if kib is None else kib / 2**20


# ---- output -------------------------------------------------------------------------------------
def print_table(rows: list[SFTRow], args: argparse.Namespace) -> None:
    pinned = "pinned" if args.pin_memory else "unpinned"
    optimizer = f"AdamW, states in {pinned} CPU memory (DeepSpeedCPUAdam)" if args.offload else "AdamW"
    processes = "one process per case" if isolated(args) else "one process"
    print(
        f"\nSFT step under DeepSpeed ZeRO-2 vs diffusers {vs_diffusers.package_version('diffusers')}, {processes}, batch 1, "
        f"clip {args.frames}x{args.height}x{args.width}, {args.dtype}, {optimizer}, gradient clipping 1.0"
    )
    header = f"{'model':<8} {'impl':<9} {'setting':<28} {'fwd+bwd s':>13} {'step s':>13} {'peak GiB':>9} {'host GiB':>9} {'fwd+bwd/diff':>12} {'mem/diff':>8} {'TFLOP/s':>8} {'1st s':>7}"
    print_header(header)
    for r in rows:
        if r.error:
            print(f"{r.model:<8} {r.impl:<9} {r.setting:<28} {'' if r.error.startswith('skipped') else 'FAILED '}{r.error}")
            continue
        ref = next((d for d in rows if d.model == r.model and d.impl == "diffusers" and not d.error), None)
        ratio = f"{r.seconds / ref.seconds:.3f}" if ref else "-"
        mem = f"{r.peak_gib / ref.peak_gib:.2f}" if ref and not math.isnan(r.peak_gib) else "-"
        peak = "-" if math.isnan(r.peak_gib) else f"{r.peak_gib:.1f}"
        host = "-" if math.isnan(r.host_gib) else f"{r.host_gib:.1f}"
        print(
            f"{r.model:<8} {r.impl:<9} {r.setting:<28} {r.seconds:>7.3f}+-{r.std:.3f} {r.step_seconds:>7.3f}+-{r.step_std:.3f}"
            f" {peak:>9} {host:>9} {ratio:>12} {mem:>8} {r.tflops:>8.1f} {r.first_step:>7.1f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = vs_diffusers.build_parser(__doc__.splitlines()[0])
    parser.add_argument("--offload", action="store_true", help="ZeRO-Offload: float32 master weights, their gradients and the Adam moments in CPU memory (see --pin-memory)")
    parser.add_argument(
        "--pin-memory",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="offload_optimizer.pin_memory (off by default: torch's pinned allocator rounds DeepSpeed's flat 5B buffers up to powers of two, more than a 128 GB host holds)",
    )
    parser.add_argument(
        "--isolate", action=argparse.BooleanOptionalAction, default=None, help="run each case in a child process of its own (default: with --offload)"
    )
    parser.add_argument("--only-case", nargs=3, metavar=("MODEL", "IMPL", "SETTING"), help=argparse.SUPPRESS)  # a child's one case
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)  # where a child writes its row
    parser.set_defaults(
        models=["2b-full", "5b-full"],
        ours=[parse_setting("selective+compile"), parse_setting("full+compile")],
        warmup=1,
        steps=2,
        budget_s=330,  # a 5B case with --offload takes up to ~3 min: the table prints inside 9 minutes
    )
    args = parser.parse_args(argv)
    if args.only_case and (args.only_case[0] not in vs_diffusers.MODELS or args.only_case[1] not in ("diffusers", "ours")):
        parser.error(f"--only-case {' '.join(args.only_case)}: expected MODEL ({', '.join(vs_diffusers.MODELS)}) IMPL (diffusers, ours) SETTING")
    return args


def isolated(args: argparse.Namespace) -> bool:
    return args.offload if args.isolate is None else args.isolate


def case_runner(args: argparse.Namespace, argv: list[str]) -> Callable[[str, str, Setting | None], SFTRow]:
    """How each case runs: in a child process of its own, or here, in this process's one-rank world."""
    if isolated(args):
        if args.tiny:
            vs_diffusers.run_device(args)  # shrinks the sizes the table names; the GPU is left to the children
        return lambda name, impl, setting: run_case_in_child(name, impl, setting, args, argv)
    device, dtype = vs_diffusers.run_device(args), DTYPES[args.dtype]
    join_one_rank_world(device)
    return lambda name, impl, setting: run_case(name, impl, setting, args, device, dtype)


def main(argv: list[str] | None = None) -> list[SFTRow]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.only_case:
        return [run_only_case(args)]
    start = time.perf_counter()
    rows = vs_diffusers.run_within_budget(args, case_runner(args, argv), SFTRow)
    print_table(rows, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()

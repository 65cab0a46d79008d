"""VAE context parallelism across GPUs: one clip's encode and decode split over cp ranks.

Run under torchrun (NCCL on GPUs; gloo on the CPU with --tiny). For every cp size c in
--cp-sizes that divides the world, the world is cut into groups of c consecutive ranks
(`cogvideox_sat.distributed.initialize_context_parallel`) and every group encodes and decodes the
same clip at once (every GPU busy). The VAE is the config's first_stage_config with random
weights, the same seed on every rank. Per cp size and op it prints: seconds (median of --repeat,
slowest rank), peak GiB per GPU (max over ranks, weights included) and the max relative
difference max|a - b| / max|b| of rank 0's gathered result against one process doing the same
work, computed on rank 0:

- encode (the posterior's mean and log-variance): against the one-pass encode (the encoder's GroupNorm gathers statistics over the
  group, `gather_norm: true` in every official config, so CP must reproduce it);
- decode: the official decoders keep per-rank GroupNorm statistics (`gather_norm: false`), so
  the exact one-process counterpart is a streamed decode cut where the ranks are
  (`decode_chunked`); the `vs one-pass` column shows what per-rank statistics cost against the
  one-pass decode (information, not a check).

`check` is `ok` when the exact counterpart's difference is within --tolerance (default 1e-4 for
fp32, 3e-2 for bf16/fp16: kernels pick other algorithms for other frame counts). A cp size whose
clip is too short (every rank but the first needs >= 2 latent frames) prints its reason; an op
that runs out of memory prints OOM (one-pass decode of 81x768x1360 needs > 80 GB).

    torchrun --standalone --nproc_per_node=4 benchmarks/vae_cp.py                       # 49x480x720, cp 1 2 4
    torchrun --standalone --nproc_per_node=8 benchmarks/vae_cp.py --cases 49x480x720 81x768x1360
    torchrun --standalone --nproc_per_node=2 benchmarks/vae_cp.py --dtype fp32          # exactness
    torchrun --standalone --nproc_per_node=2 benchmarks/vae_cp.py --tiny                # CPU, gloo
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import max_over_ranks, peak_gib, reset_peak_memory, synchronize  # noqa: E402

from cogvideox_sat import distributed  # noqa: E402
from cogvideox_sat.dtypes import DTYPES  # noqa: E402
from cogvideox_sat.registry import instantiate_from_config  # noqa: E402
from cogvideox_sat.vae.chunking import decode_chunked  # noqa: E402
from cogvideox_sat.vae.time_split import balanced_groups, check_cp_groups, piece_sizes  # noqa: E402

TINY = {"ch": 32, "ch_mult": [1, 2, 1, 1], "num_res_blocks": 1, "z_channels": 4}


@dataclass
class Row:
    case: str
    cp: int
    op: str
    seconds: float  # nan: out of memory
    peak_gib: float
    diff: float  # against the exact one-process counterpart (nan: no reference)
    diff_one_pass: float  # decode: against the one-pass decode
    note: str = ""


def vae_config(config: Path, tiny: bool) -> dict[str, Any]:
    """The config's first_stage_config without its checkpoint (random weights), shrunk with --tiny."""
    cfg = copy.deepcopy(yaml.safe_load(config.read_text())["model"]["first_stage_config"])
    cfg["params"]["ckpt_path"] = None
    if tiny:
        for coder in ("encoder_config", "decoder_config"):
            cfg["params"][coder]["params"].update(TINY)
    return cfg


def build_vae(config: Path, tiny: bool, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights on every rank: built on the CPU, then moved
    return instantiate_from_config(vae_config(config, tiny)).to(device=device, dtype=dtype).eval()


def rel_diff(got: torch.Tensor, ref: torch.Tensor | None) -> float:
    if ref is None or got.shape != ref.shape:
        return float("nan")
    got, ref = got.float().cpu(), ref.float()
    return ((got - ref).abs().max() / ref.abs().max()).item()


def measure(fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeat: int) -> tuple[float, float, torch.Tensor | None]:
    """(median seconds, peak GiB, rank 0's last output on the CPU), the slowest / fullest rank's; nan on OOM."""
    out, times, failed = None, [], 0.0
    dist.barrier()  # the groups start together; no collective below but fn's own, so an OOM cannot split them
    try:
        with torch.no_grad():
            for i in range(warmup + repeat):
                if i == warmup:
                    reset_peak_memory(device)
                start = time.perf_counter()
                result = fn()
                synchronize(device)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
                if i == warmup + repeat - 1 and dist.get_rank() == 0:
                    out = result.cpu().float()
                del result
    except torch.OutOfMemoryError:
        failed, out = 1.0, None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if max_over_ranks(failed, device):
        return float("nan"), float("nan"), None
    return max_over_ranks(statistics.median(times), device), max_over_ranks(peak_gib(device), device), out


def run_case(vae: torch.nn.Module, case: str, cp_sizes: list[int], args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Encode and decode rows of one clip for every cp size (cp 1 first: rank 0 keeps its results)."""
    frames, height, width = (int(v) for v in case.lower().split("x"))
    decoder = vae_config(args.config, args.tiny)["params"]["decoder_config"]["params"]
    gathers_norm = bool(decoder.get("gather_norm", False))
    dtype, rank = DTYPES[args.dtype], dist.get_rank()
    gen = torch.Generator().manual_seed(0)  # the same clip on every rank
    x = (torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1).to(device, dtype)
    z = torch.randn(1, decoder["z_channels"], 1 + (frames - 1) // 4, height // 8, width // 8, generator=gen).to(device, dtype)
    rows: list[Row] = []
    ref_encode = ref_one_pass = None
    for cp in cp_sizes:
        # 1. Groups of cp consecutive ranks (collective: every rank creates every group)
        group = distributed.initialize_context_parallel(cp)
        vae.cp_size = cp
        if cp > 1:
            try:
                check_cp_groups(balanced_groups(z.shape[2] - 1, cp))
            except ValueError as err:
                rows.append(Row(case, cp, "encode+decode", float("nan"), float("nan"), float("nan"), float("nan"), str(err).split(":")[0]))
                continue
        # the posterior's moments: the config's regularizer may sample, which no comparison survives
        encode = (lambda: vae.encode_moments(x)) if cp == 1 else (lambda: vae.encode_moments(x, group=group))
        decode = (lambda: vae.decode_chunk(z, first_frame_separate=True, keep_state=False)[0]) if cp == 1 else (lambda: vae.decode(z, group=group))
        # 2. Timed encode and decode, every group at once
        enc_s, enc_peak, latent = measure(encode, device, args.warmup, args.repeat)
        dec_s, dec_peak, frames_out = measure(decode, device, args.warmup, args.repeat)
        # 3. Rank 0 compares with one process doing the same work (the others wait at the barrier)
        enc_diff = dec_diff = dec_one_pass = float("nan")
        if rank == 0:
            if cp == 1:
                ref_encode, ref_one_pass = latent, frames_out
                enc_diff = dec_diff = dec_one_pass = 0.0 if latent is not None else float("nan")
            else:
                enc_diff = rel_diff(latent, ref_encode) if latent is not None else float("nan")
                dec_one_pass = rel_diff(frames_out, ref_one_pass) if frames_out is not None else float("nan")
                dec_diff = dec_one_pass if gathers_norm else rel_diff(frames_out, exact_decode(vae, z, cp, device))
        dist.barrier()
        rows.append(Row(case, cp, "encode", enc_s, enc_peak, enc_diff, float("nan")))
        rows.append(Row(case, cp, "decode", dec_s, dec_peak, dec_diff, dec_one_pass))
        if rank == 0:
            print(f"  measured: {rows[-2]}\n  measured: {rows[-1]}", flush=True)
    distributed.destroy_context_parallel()
    vae.cp_size = 1
    return rows


def exact_decode(vae: torch.nn.Module, z: torch.Tensor, cp: int, device: torch.device) -> torch.Tensor | None:
    """One process decoding in pieces cut where the cp ranks are (per-piece GroupNorm statistics)."""
    chunks = piece_sizes(balanced_groups(z.shape[2] - 1, cp), 1)
    try:
        with torch.no_grad():
            out = decode_chunked(vae, z, chunks, first_frame_separate=True).float().cpu()
    except torch.OutOfMemoryError:
        out = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def print_table(rows: list[Row], args: argparse.Namespace, world: int, device: torch.device) -> None:
    tol = tolerance(args)
    print(f"\nVAE context parallel: {args.config.name} VAE, random weights, {args.dtype}, world {world} ({device.type}), "
          f"median of {args.repeat} after {args.warmup} warm-up; groups of cp ranks run the same clip")
    print("| clip | cp | op | seconds | peak GiB/GPU | speed-up | max rel diff | vs one-pass | check |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {(r.case, r.op): r.seconds for r in rows if r.cp == min(x.cp for x in rows if x.case == r.case and x.op == r.op)}
    for r in rows:
        if r.note:
            print(f"| {r.case} | {r.cp} | {r.op} | - | - | - | - | - | {r.note} |")
            continue
        secs = "OOM" if r.seconds != r.seconds else f"{r.seconds:.3f}"
        speed = base.get((r.case, r.op), float("nan")) / r.seconds
        check = "ok" if r.diff <= tol else ("-" if r.diff != r.diff else "DIFF")
        print(f"| {r.case} | {r.cp} | {r.op} | {secs} | {r.peak_gib:.2f} | {speed:.2f} | {r.diff:.2e} | {r.diff_one_pass:.2e} | {check} |")


def tolerance(args: argparse.Namespace) -> float:
    return args.tolerance if args.tolerance is not None else (1e-4 if args.dtype == "fp32" else 3e-2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=REPO / "configs/cogvideox_5b.yaml", help="model YAML with model.first_stage_config")
    p.add_argument("--cases", nargs="+", default=None, help="clips as FRAMESxHEIGHTxWIDTH (default 49x480x720)")
    p.add_argument("--cp-sizes", type=int, nargs="+", default=[1, 2, 4], help="those dividing the world run; 1 is the reference")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default bf16 (fp32 with --tiny)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--tolerance", type=float, default=None)
    p.add_argument("--tiny", action="store_true", help="toy VAE and a 17x32x48 clip on the CPU (gloo)")
    args = p.parse_args(argv)
    args.cases = args.cases or (["17x32x48"] if args.tiny else ["49x480x720"])
    args.dtype = args.dtype or ("fp32" if args.tiny else "bf16")
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    use_cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=5))
    world = dist.get_world_size()
    cp_sizes = sorted({c for c in args.cp_sizes if world % c == 0} | {1})  # 1: the reference
    vae = build_vae(args.config, args.tiny, device, DTYPES[args.dtype])
    rows = [row for case in args.cases for row in run_case(vae, case, cp_sizes, args, device)]
    if dist.get_rank() == 0:
        print_table(rows, args, world, device)
    dist.destroy_process_group()
    return rows


if __name__ == "__main__":
    main()

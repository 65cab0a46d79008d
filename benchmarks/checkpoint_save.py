"""What a durable, verified checkpoint costs per save: DeepSpeed's write alone vs `save_checkpoint`
(write + SHA-256 manifest, with and without the fsyncs), and the check `--resume` makes.

The checkpoint is what a LoRA (or full) fine-tune saves: the DiT's trainable tensors and their
AdamW state after one optimizer step, under DeepSpeed ZeRO, random weights. Modes are
interleaved so page-cache state does not favour one; the median of `--repeats` saves is printed.

    python benchmarks/checkpoint_save.py --config configs/cogvideox_2b_lora.yaml --lora-rank 128 \
        --zero-stage 2 --repeats 3 --out /tmp/ckpt-bench         # one GPU: the 2B LoRA checkpoint
    python benchmarks/checkpoint_save.py --tiny                  # CPU: the demo model (configs/demo)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from dit_step import network_config, with_lora  # noqa: E402

from cogvideox_sat.models.lora import mark_only_lora_trainable  # noqa: E402
from cogvideox_sat.registry import instantiate_from_config  # noqa: E402
from cogvideox_sat.training.checkpoint import save_checkpoint  # noqa: E402
from cogvideox_sat.training.main import optimizer_config, param_groups  # noqa: E402
from cogvideox_sat.training.manifest import check_tag  # noqa: E402

TINY = REPO / "configs" / "demo" / "tiny_t2v_lora.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", nargs="+", default=[str(TINY)], help="model config(s) with model.network_config")
    p.add_argument("--tiny", action="store_true", help="the CPU demo model (configs/demo/tiny_t2v_lora.yaml), fp32")
    p.add_argument("--lora-rank", type=int, help="LoRA rank (default: the config's)")
    p.add_argument("--full", action="store_true", help="full fine-tuning (no LoRA)")
    p.add_argument("--zero-stage", type=int, default=2, choices=(1, 2, 3))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, help="folder to save into (its file system is what is measured; default: a temp folder)")
    return p.parse_args(argv)


def init_single_process(device: torch.device) -> None:
    import deepspeed

    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29517")):
        os.environ.setdefault(key, value)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", auto_mpi_discovery=False)


def build(args: argparse.Namespace, device: torch.device):
    """The DiT under DeepSpeed after one AdamW step (so the optimizer state exists)."""
    import deepspeed

    cfg = with_lora(network_config(args.config if not args.tiny else [str(TINY)]), args.lora_rank, args.full, None)
    torch.manual_seed(0)
    with torch.device(device):
        model = instantiate_from_config(cfg)
    if "lora" in model.mixins:
        mark_only_lora_trainable(model)
    bf16 = device.type == "cuda"
    ds_config = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": args.zero_stage},
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.01}},
    }
    ds_engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model), config=optimizer_config(ds_config, device))
    trainable = [p for p in ds_engine.module.parameters() if p.requires_grad]
    loss = sum((p.float() ** 2).sum() for p in trainable) * 1e-6  # any loss: only the state's size matters
    ds_engine.backward(loss)
    ds_engine.step()
    return ds_engine, sum(p.numel() for p in trainable)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device = torch.device("cuda") if torch.cuda.is_available() and not args.tiny else torch.device("cpu")
    init_single_process(device)
    start = time.perf_counter()
    ds_engine, trainable = build(args, device)
    # the first CUDA run JIT-builds DeepSpeed's fused Adam (~40 s): say where the time went
    print(f"model + DeepSpeed engine + one step ready in {time.perf_counter() - start:.0f} s", flush=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {"deepspeed write only": [], "save, no fsync": [], "save (durable)": [], "resume check": []}
    tag = 0
    for _ in range(args.repeats):
        tag += 1
        raw = out / "raw"
        times["deepspeed write only"].append(timed(lambda: ds_engine.save_checkpoint(str(raw), tag=str(tag), client_state={}, save_latest=False, exclude_frozen_parameters=True)))
        shutil.rmtree(raw)
        for label, durable in (("save, no fsync", False), ("save (durable)", True)):
            tag += 1
            times[label].append(timed(lambda: save_checkpoint(ds_engine, out / "run", tag, {}, keep_last=1, durable=durable)))
        times["resume check"].append(timed(lambda: check_tag(out / "run" / str(tag))))
    size = check_tag(out / "run" / str(tag)).bytes
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'x'.join(args.config) if not args.tiny else TINY.name}: {trainable:,} trainable, ZeRO-{args.zero_stage}, "
          f"checkpoint {size / 2**20:.1f} MiB on {device.type}, in {out}")
    base = medians["deepspeed write only"]
    for label, value in medians.items():
        extra = f"  (+{value - base:.3f} s vs DeepSpeed alone)" if label.startswith("save") else ""
        print(f"  {label:<22} {value:8.3f} s{extra}")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return medians


if __name__ == "__main__":
    main()

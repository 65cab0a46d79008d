"""End-to-end training speed through train_video.py: step time and peak memory.

Random weights (no checkpoint), a stand-in T5 with the real width (1 layer: the text encoder is
not what is measured), the real-size VAE encoding every clip (no cache), generated clips.

    python benchmarks/train_run.py --config configs/cogvideox_2b_lora.yaml --steps 20 \
        --clips .devdata/clips --frames 49 --size 480 720
    python benchmarks/train_run.py --tiny          # CPU smoke run on the demo model
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def text_width(config: Path) -> int:
    net = yaml.safe_load(config.read_text())["model"]["network_config"]["params"]
    return int(net["modules"]["patch_embed_config"]["params"]["text_hidden_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs/cogvideox_2b_lora.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--clips", type=Path, default=None, help="folder of videos/ + labels/ (generated if absent)")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--size", type=int, nargs=2, default=[480, 720])
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--checkpoint-activations", choices=["true", "false"], default="true")
    parser.add_argument("--tiny", action="store_true", help="demo model on the CPU, 4 steps")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if args.tiny:
        args.config, args.steps, args.frames, args.size, args.precision = REPO / "configs/demo/tiny_t2v_lora.yaml", 4, 9, [64, 96], "fp32"

    from cogvideox_sat.demo.clips import make_sft_folder
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5

    work = args.work or Path(tempfile.mkdtemp(prefix="train_run_"))
    clips = args.clips or work / "clips"
    if not (clips / "videos").is_dir():
        make_sft_folder(clips, n_clips=4, num_frames=args.frames, height=args.size[0], width=args.size[1], fps=8)
    width = text_width(args.config)
    t5 = make_tiny_t5(work / "t5", d_model=width, num_layers=1, num_heads=max(width // 64, 1), d_kv=64, d_ff=256)

    max_length = yaml.safe_load(args.config.read_text())["model"]["conditioner_config"]["params"]["emb_models"][0]["params"]["max_length"]
    emb = {"is_trainable": False, "input_key": "txt", "ucg_rate": 0.1, "target": "cogvideox_sat.conditioner.FrozenT5Embedder",
           "params": {"model_dir": str(t5), "max_length": max_length}}
    overlay = {
        "model": {
            "conditioner_config": {"params": {"emb_models": [emb]}},
            "first_stage_config": {"params": {"ckpt_path": None}},
            "network_config": {"params": {"transformer_args": {"checkpoint_activations": args.checkpoint_activations == "true"}}},
        },
        "args": {"mode": "pretrain", "load": None, "train_iters": args.steps, "save_interval": 10**9, "log_interval": 1,
                 "eval_interval": None, "valid_data": None, "train_data": [str(clips)], "save": str(work / "runs"),
                 "num_workers": 2, "checkpoint_activations": args.checkpoint_activations == "true", "train_frame_rule": "4k+1"},
        "data": {"target": "cogvideox_sat.data.SFTDataset",
                 "params": {"video_size": list(args.size), "fps": 8, "max_num_frames": args.frames, "skip_frms_num": 0.0}},
        "deepspeed": {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
                      "zero_optimization": {"stage": args.zero_stage}, "zero_allow_untested_optimizer": True,
                      "bf16": {"enabled": args.precision == "bf16"}, "fp16": {"enabled": args.precision == "fp16"},
                      "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 1e-4}}},
    }
    (work / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    cmd = [sys.executable, str(REPO / "train_video.py"), "--base", str(args.config), str(work / "overlay.yaml"), "--seed", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True)
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-6000:], sep="\n")
        raise SystemExit(proc.returncode)
    (run,) = [p for p in (work / "runs").iterdir() if p.is_dir()]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step_s"] for r in records if "step_s" in r]
    timed = steps[3:] or steps  # first steps include compilation and allocator warm-up
    mem = max((r.get("max_mem_gib", 0.0) for r in records), default=0.0)
    print(f"config {args.config.name}  clip {args.frames}x{args.size[0]}x{args.size[1]}  {args.precision}  ZeRO-{args.zero_stage}  "
          f"checkpointing {args.checkpoint_activations}")
    print(f"steps {len(steps)}  median step {statistics.median(timed):.3f} s  (min {min(timed):.3f}, max {max(timed):.3f})  peak memory {mem:.2f} GiB")
    print(f"final loss {records[-1]['loss']:.4f}  run {run}")


if __name__ == "__main__":
    main()

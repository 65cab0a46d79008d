"""Create the demo's assets with no network: a tiny T5 + tokenizer, captioned clips and a VAE
fitted to them.

    python tools/make_demo_assets.py demo_assets

Writes OUT_DIR/t5 (a T5 encoder with d_model 32 and a tokenizer trained on the spot),
OUT_DIR/data and OUT_DIR/data_lora (the base and LoRA stages' 9-frame 64x96 clips in the official
layout: videos/ + labels/), OUT_DIR/vae/3d-vae.pt (the demo VAE fitted to those clips in about two
minutes of CPU time, in the released file format; its reconstruction PSNR is printed),
OUT_DIR/prompts.txt (every caption) and OUT_DIR/paths.yaml (an extra --base file pointing the demo
configs at that VAE and its latent scale factor). The configs in configs/demo/ point at
OUT_DIR=demo_assets. What each clip shows: cogvideox_sat/demo/assets.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cogvideox_sat.demo.assets import make_demo_assets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", default="demo_assets")
    parser.add_argument("--vae-steps", type=int, default=430, help="optimizer steps fitting the demo VAE (the first 70%% on single frames)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    make_demo_assets(args.out_dir, vae_steps=args.vae_steps)


if __name__ == "__main__":
    main()

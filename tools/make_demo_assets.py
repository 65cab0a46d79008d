"""Create the demo's assets with no network: a tiny random T5 + tokenizer and captioned clips.

    python tools/make_demo_assets.py demo_assets

Writes OUT_DIR/t5 (a T5 encoder with d_model 32 and a tokenizer trained on the spot),
OUT_DIR/data (a dozen 17-frame 64x96 synthetic clips in the official layout: videos/ + labels/),
OUT_DIR/vae/3d-vae.pt (the demo VAE's random weights, in the official file format, so training and
sampling decode with the same VAE) and OUT_DIR/paths.yaml (an extra --base file pointing the
demo configs at that VAE). The configs in configs/demo/ point at OUT_DIR=demo_assets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402

from cogvideox_sat.demo.clips import make_sft_folder  # noqa: E402
from cogvideox_sat.demo.tiny_t5 import make_tiny_t5  # noqa: E402
from cogvideox_sat.registry import instantiate_from_config  # noqa: E402

DEMO_MODEL = Path(__file__).resolve().parents[1] / "configs" / "demo" / "tiny_t2v.yaml"


def make_demo_vae(out: Path, seed: int = 0) -> Path:
    """Random weights of the demo VAE saved like the released `3d-vae.pt` ({"state_dict": ...})."""
    cfg = yaml.safe_load(DEMO_MODEL.read_text())["model"]["first_stage_config"]
    torch.manual_seed(seed)
    vae = instantiate_from_config(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": vae.state_dict()}, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", default="demo_assets")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=17, help="frames per clip (the demo trains on 9)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    args = parser.parse_args()

    out = Path(args.out_dir)
    t5_dir = make_tiny_t5(out / "t5", d_model=32)
    print(f"tiny T5 encoder + tokenizer: {t5_dir}")
    vae = make_demo_vae(out / "vae" / "3d-vae.pt")
    (out / "paths.yaml").write_text(yaml.safe_dump({"model": {"first_stage_config": {"params": {"ckpt_path": str(vae)}}}}))
    print(f"demo VAE weights: {vae} (use {out / 'paths.yaml'} as an extra --base file)")
    clips = make_sft_folder(out / "data", n_clips=args.clips, num_frames=args.frames, height=args.height, width=args.width, fps=8)
    (out / "data" / ".complete").write_text(f"{len(clips)} clips\n")
    print(f"{len(clips)} captioned clips: {out / 'data'} (videos/ + labels/)")


if __name__ == "__main__":
    main()

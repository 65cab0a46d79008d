"""Data loading throughput: training clips per second, by number of DataLoader workers.

    python benchmarks/data.py                      # 49x480x720 clips from 1280x720 24 fps sources
    python benchmarks/data.py --workers 0 4 8 16 --clips 16
    python benchmarks/data.py --tiny               # seconds on a CPU: 9x64x96 from 160x128 sources
    python benchmarks/data.py --data my_sft_dir    # your own folder (videos/ + labels/)

Source clips are synthetic (cogvideox_sat.demo.clips, H.264) unless --data is given. Each
setting reads --items clips through an SFTDataset + DataLoader (batch 1, shuffled, the
official SFT params) after a warm-up of one clip per worker, and prints clips/s. A per-stage
split (open+decode vs resize+crop) measured in-process follows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from cogvideox_sat.data import SFTDataset  # noqa: E402
from cogvideox_sat.data.clip import load_clip, sft_rule  # noqa: E402
from cogvideox_sat.data.transforms import resize_center_crop  # noqa: E402
from cogvideox_sat.data.video_io import open_video, read_frames, video_info  # noqa: E402
from cogvideox_sat.demo.clips import make_clip  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="small sizes for a quick CPU run")
    p.add_argument("--data", help="an existing SFT folder instead of synthetic clips")
    p.add_argument("--workers", type=int, nargs="+", help="DataLoader worker counts to compare")
    p.add_argument("--clips", type=int, help="synthetic source clips to make")
    p.add_argument("--items", type=int, help="clips to load per setting (after warm-up)")
    p.add_argument("--source", help="synthetic source size HxW (default 720x1280)")
    p.add_argument("--source-fps", type=float, default=24.0)
    p.add_argument("--seconds", type=float, help="synthetic source duration")
    p.add_argument("--size", help="training size HxW (default 480x720)")
    p.add_argument("--frames", type=int, help="max_num_frames (default 49)")
    p.add_argument("--resize", default="bicubic", choices=["bicubic", "bilinear"], help="SFTDataset resize mode")
    args = p.parse_args()
    defaults = dict(workers=[0, 2], clips=4, items=8, source="128x160", seconds=3.0, size="64x96", frames=9) if args.tiny else dict(
        workers=[0, 2, 4, 8], clips=8, items=32, source="720x1280", seconds=8.0, size="480x720", frames=49
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def hw(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def make_sources(folder: Path, n: int, size: tuple[int, int], fps: float, seconds: float) -> None:
    frames = int(round(seconds * fps))
    start = time.perf_counter()
    for i in range(n):
        caption = make_clip(folder / "videos" / f"src_{i:03d}.mp4", num_frames=frames, height=size[0], width=size[1], fps=fps, seed=i)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / "labels" / f"src_{i:03d}.txt").write_text(caption + "\n")
    print(f"made {n} sources {size[0]}x{size[1]} @ {fps:g} fps, {frames} frames each, in {time.perf_counter() - start:.1f} s")


def loader_rate(dataset: SFTDataset, workers: int, items: int) -> float:
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=workers, persistent_workers=False)
    it = iter(loader)
    for _ in range(max(workers, 1)):  # warm-up: every worker started and produced once
        next(it)
    start = time.perf_counter()
    n = 0
    while n < items:
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += 1
    return n / (time.perf_counter() - start)


def stage_split(dataset: SFTDataset, repeats: int) -> tuple[float, float, float]:
    """Seconds per clip for open+decode, resize+crop, and the whole load, in this process."""
    decode = resize = total = 0.0
    for r in range(repeats):
        i = r % len(dataset)
        path, spec = dataset.source(i), dataset.clip_spec(i)
        rule = sft_rule(spec)
        t0 = time.perf_counter()
        reader = open_video(path, path)
        indices, _ = rule(video_info(reader, path))
        frames = read_frames(reader, indices, path, spec.max_frame_side)
        t1 = time.perf_counter()
        resize_center_crop(torch.from_numpy(frames).permute(0, 3, 1, 2), spec.size, spec.resize)
        t2 = time.perf_counter()
        load_clip(path, path, spec, rule, None)
        t3 = time.perf_counter()
        decode, resize, total = decode + t1 - t0, resize + t2 - t1, total + t3 - t2
    return decode / repeats, resize / repeats, total / repeats


def main() -> None:
    args = parse_args()
    size = hw(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.data) if args.data else Path(tmp) / "sft"
        if not args.data:
            make_sources(folder, args.clips, hw(args.source), args.source_fps, args.seconds)
        dataset = SFTDataset(str(folder), video_size=list(size), fps=8, max_num_frames=args.frames, skip_frms_num=3.0, resize=args.resize)
        item = dataset[0]
        print(
            f"{len(dataset)} clips -> items mp4 {tuple(item['mp4'].shape)}, num_frames {item['num_frames']}, "
            f"resize {args.resize}; torch threads {torch.get_num_threads()}"
        )
        print(f"{'workers':>8} {'clips/s':>9} {'ms/clip':>9}")
        for workers in args.workers:
            rate = loader_rate(dataset, workers, args.items)
            print(f"{workers:>8} {rate:>9.2f} {1000 / rate:>9.1f}")
        decode, resize, total = stage_split(dataset, repeats=max(2, min(8, args.items // 4)))
        print(
            f"one process, per clip: open+decode {decode * 1000:.1f} ms, resize+crop {resize * 1000:.1f} ms, "
            f"whole load_clip {total * 1000:.1f} ms"
        )
        counts = dataset.skip_counts()
        if counts:
            print(f"skipped: {counts}")


if __name__ == "__main__":
    main()

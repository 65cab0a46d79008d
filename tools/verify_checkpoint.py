"""List the checkpoints of a training run as intact or damaged (size + SHA-256 against each manifest).

    python tools/verify_checkpoint.py runs/my-run
    20       intact   3 files, 1234567 bytes
    30       damaged  mp_rank_00_model_states.pt has 1000 bytes, the manifest says 52345 (cut short or overwritten)
    30-ema   intact   1 file, 4567 bytes

Every tag folder is checked (EMA and other suffixed tags too); `<- latest` marks the one `latest`
names. Exit code 0 when every checkpoint is intact, 1 otherwise (`--resume` skips damaged ones and
loads the newest intact one before `latest`'s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cogvideox_sat.io.run_folder import read_latest  # noqa: E402
from cogvideox_sat.training.checkpoint import tag_folders  # noqa: E402
from cogvideox_sat.training.manifest import check_tag  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a training run folder (holds `latest` and the tag folders)")
    args = parser.parse_args(argv)
    tags = tag_folders(args.run_dir)
    if not tags:
        print(f"{args.run_dir}: no checkpoint folders", file=sys.stderr)
        return 1
    latest = read_latest(args.run_dir)
    width = max(len(p.name) for p in tags)
    damaged = 0
    for path in tags:
        check = check_tag(path)
        mark = "  <- latest" if path.name == latest else ""
        if check.intact:
            plural = "s" if check.files != 1 else ""
            print(f"{path.name:<{width}}  intact   {check.files} file{plural}, {check.bytes} bytes{mark}")
        else:
            damaged += 1
            print(f"{path.name:<{width}}  damaged  {check.reason()}{mark}")
    if latest is None:
        print(f"{args.run_dir}: no `latest` file", file=sys.stderr)
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo's learning report: loss curves, each caption's clip next to its samples, the nearest
training clip of every sample, and a one-line verdict (printed, and saved as PNG + JSON).

    python tools/demo_report.py --base-run runs/demo/demo-base-... --lora-run runs/demo/demo-lora-... \
        --assets demo_assets --samples outputs/demo --times assets=60 base=25

Expects sample_video.py's output under SAMPLES/base (base weights alone) and SAMPLES/base+lora
(base + the LoRA run) for every caption of ASSETS/data and ASSETS/data_lora. Exit status 0 when
the report could be made (whatever the verdict), 2 when an input is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cogvideox_sat.demo.report import write_report  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-run", type=Path, required=True)
    parser.add_argument("--lora-run", type=Path, required=True)
    parser.add_argument("--assets", type=Path, default=Path("demo_assets"))
    parser.add_argument("--samples", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default SAMPLES/learning_report.png)")
    parser.add_argument("--times", nargs="*", default=[], metavar="STAGE=SECONDS", help="stage times to print and draw")
    args = parser.parse_args()
    times = {}
    for item in args.times:
        stage, _, seconds = item.partition("=")
        times[stage] = float(seconds)
    try:
        write_report(
            args.base_run, args.lora_run, args.assets / "data", args.assets / "data_lora",
            args.samples / "base+lora", args.samples / "base", args.out or args.samples / "learning_report.png", times,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

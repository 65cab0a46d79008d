"""Fine-tune CogVideoX (LoRA or full) from SAT-style configs.

    python train_video.py --base configs/cogvideox_2b_lora.yaml configs/sft.yaml [--seed N]
    python train_video.py --base ... --validate-only     # check the configs and exit
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from cogvideox_sat.cli import parse_run, run_or_exit


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_run("train", argv, __doc__)
    from cogvideox_sat.training.main import train

    run_or_exit(train, args)


if __name__ == "__main__":
    main()

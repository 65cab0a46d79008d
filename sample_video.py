"""Generate videos (text-to-video or image-to-video) from SAT-style configs.

    python sample_video.py --base configs/cogvideox_5b.yaml configs/inference.yaml [--seed N]
    python sample_video.py --base ... --validate-only     # check the configs and exit
    torchrun --nproc_per_node=4 sample_video.py --base ... --model-parallel-size 4 --sequence-parallel
                                                          # 4 GPUs share each video (Ulysses)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from cogvideox_sat.cli import parse_run, run_or_exit


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_run("sample", argv, __doc__)
    from cogvideox_sat.sampling.main import sample

    run_or_exit(sample, args)


if __name__ == "__main__":
    main()

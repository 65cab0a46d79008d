"""Generate videos (text-to-video or image-to-video) from SAT-style configs.

    python sample_video.py --base configs/cogvideox_5b.yaml configs/inference.yaml [--seed N]
    python sample_video.py --base ... --validate-only     # check the configs and exit
    torchrun --nproc_per_node=4 sample_video.py --base ... --model-parallel-size 4 --sequence-parallel
                                                          # 4 GPUs share each video (Ulysses)
    python sample_video.py --from-validation <run>/samples/iter_000100/0_<prompt>/0 [--device cuda]
                                                          # draw a validation sample again (its sample.json)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

from cogvideox_sat.cli import parse_run, run_or_exit


def main(argv: Optional[Sequence[str]] = None) -> None:
    from cogvideox_sat.sampling.reproduce import ReproduceError, expand_from_validation

    try:
        argv = expand_from_validation(sys.argv[1:] if argv is None else argv)
    except ReproduceError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    args = parse_run("sample", argv, __doc__)
    from cogvideox_sat.sampling.main import sample

    run_or_exit(sample, args)


if __name__ == "__main__":
    main()

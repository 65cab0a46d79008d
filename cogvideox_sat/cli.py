"""Command-line front door shared by train_video.py and sample_video.py.

Parses `--base ...` plus flags, validates everything up front and either prints the merged config
(`--validate-only`, exit 0), prints every problem (exit 2), or returns the run's namespace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Optional

from cogvideox_sat.arguments import build_parser
from cogvideox_sat.config import ValidatedRun, to_namespace, validate_run
from cogvideox_sat.config.context import RunKind
from cogvideox_sat.registry import allow_any_target

EXIT_INVALID = 2


def _report(run: ValidatedRun) -> None:
    for problem in run.warnings:
        print(problem.render(), file=sys.stderr)
    if run.errors:
        print(f"{len(run.errors)} problem(s) in the configuration:", file=sys.stderr)
        for problem in run.errors:
            print("  " + problem.render(), file=sys.stderr)


def parse_run(kind: RunKind, argv: Optional[Sequence[str]] = None, description: str = "") -> argparse.Namespace:
    """Parse and validate; exits with 2 on problems and with 0 after `--validate-only`."""
    parser = build_parser(description or f"cogvideox-sat {kind}")
    flags = vars(parser.parse_args(argv))
    validate_only = flags.pop("validate_only", False)
    any_target = flags.pop("allow_any_target", False)
    paths = flags.pop("base", None) or []
    if not paths:
        parser.error("--base is required: e.g. --base configs/cogvideox_2b_lora.yaml configs/sft.yaml")

    with allow_any_target(any_target):
        run = validate_run(paths, kind, flags)
    if validate_only and run.ok:
        print(run.merged_yaml(), end="")
    _report(run)
    if not run.ok:
        sys.exit(EXIT_INVALID)
    if validate_only:
        print(f"configuration is valid ({' '.join(paths)})", file=sys.stderr)
        sys.exit(0)
    ns = to_namespace(run)
    ns.allow_any_target = any_target
    return ns


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe bad input (a path, a checkpoint, data): shown as a message, not a traceback."""
    from cogvideox_sat.data.latent_cache import StaleCacheError
    from cogvideox_sat.data.skips import NoUsableSamples
    from cogvideox_sat.io.load_report import CheckpointMismatchError
    from cogvideox_sat.registry import TargetError
    from cogvideox_sat.sampling.weights import LoraCheckpointError
    from cogvideox_sat.training.checkpoint import NonFiniteWeightsError
    from cogvideox_sat.training.loop import NonFiniteLossError

    return (
        FileNotFoundError,
        CheckpointMismatchError,
        LoraCheckpointError,
        NoUsableSamples,
        StaleCacheError,
        NonFiniteLossError,
        NonFiniteWeightsError,
        TargetError,
    )


def run_or_exit(fn: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> None:
    """Run the job; a bad-input error prints its message and exits with 2 (no traceback), a full
    disk prints one line and exits with 1, a save on signal exits with its own code (75)."""
    from cogvideox_sat.training.disk_space import DiskFullError
    from cogvideox_sat.training.preemption import StoppedOnSignal

    try:
        fn(args)
    except StoppedOnSignal as stop:  # the loop has printed why
        sys.exit(stop.exit_code)
    except DiskFullError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_INVALID)

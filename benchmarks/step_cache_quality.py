"""What the sampling step cache costs in quality and saves in time, on trained weights.

Samples each prompt of a sample_video.py config once without the cache and once per threshold
(`sampler_config.params.step_cache_threshold`), all with the prompt's own seed, and reports per
threshold: the steps skipped, the sampling time against the uncached run's, and the decoded
video's PSNR against the uncached video of the same seed. Also the range of the first block's
per-step change that the thresholds are picked from. Takes sample_video.py's arguments; the
videos are not written.

    python benchmarks/step_cache_quality.py --base configs/demo/tiny_t2v.yaml configs/demo/inference_tiny.yaml \\
        demo_assets/paths.yaml --load runs/demo/demo-base-<...> --thresholds 0.05 0.1 0.2 0.4
    python benchmarks/step_cache_quality.py --base configs/cogvideox_2b.yaml configs/inference.yaml --prompts 2 --thresholds 0.05 0.1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import print_header, synchronize  # noqa: E402

from cogvideox_sat.cli import parse_run  # noqa: E402
from cogvideox_sat.demo.vae_fit import psnr_db  # noqa: E402
from cogvideox_sat.sampling.decoding import decode_samples  # noqa: E402
from cogvideox_sat.sampling.generate import draw_latents, prompt_inputs, sample_seed  # noqa: E402
from cogvideox_sat.sampling.main import build_sampling_engine, latent_shape, prompt_source, prompts_with_id_token  # noqa: E402
from cogvideox_sat.sampling.placement import place  # noqa: E402
from cogvideox_sat.training.rng import seed_everything  # noqa: E402


@dataclass
class Outcome:
    """One threshold over all prompts (threshold None: the uncached reference)."""

    threshold: float | None
    seconds: list[float] = field(default_factory=list)
    skipped: int = 0
    steps: int = 0
    psnr: list[float] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    """(our options, sample_video.py's arguments)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4], help="step cache thresholds to compare")
    parser.add_argument("--prompts", type=int, default=None, help="only the first N prompts of the input file")
    parser.add_argument("--repeats", type=int, default=1, help="timed draws per prompt and threshold (the best one counts)")
    ours, rest = parser.parse_known_args(argv)
    if any(t <= 0 for t in ours.thresholds):
        parser.error("--thresholds must be > 0 (the uncached run is always the reference)")
    return ours, parse_run("sample", rest, __doc__)


def timed_draw(engine, c, uc, seed: int, shape, device: torch.device, repeats: int) -> tuple[torch.Tensor, float]:
    """(latents, best seconds of `repeats` draws with the same seed)."""
    best, z = float("inf"), None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        z = draw_latents(engine, c, uc, seed, shape)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return z, best


def measure(engine, prompts, args: argparse.Namespace, ours: argparse.Namespace, device: torch.device) -> list[Outcome]:
    shape = latent_shape(engine, args)
    outcomes = [Outcome(None)] + [Outcome(t) for t in ours.thresholds]
    draw_latents(engine, *prompt_inputs(engine, prompts[0].text, None, shape[0], args.seed), args.seed, shape)  # warm-up
    for prompt in prompts:
        seed = sample_seed(args.seed, prompt.index, 0, args.batch_size)
        c, uc = prompt_inputs(engine, prompt.text, None, shape[0], seed)
        reference = None
        for outcome in outcomes:
            engine.sampler.step_cache_threshold = outcome.threshold
            z, seconds = timed_draw(engine, c, uc, seed, shape, device, ours.repeats)
            video = decode_samples(engine, z)[0]
            outcome.seconds.append(seconds)
            cache = engine.sampler.last_step_cache
            if cache is not None:
                outcome.skipped += cache.skipped
                outcome.steps += cache.steps
                outcome.changes += cache.changes
            if reference is None:
                reference = video
            else:
                outcome.psnr.append(float(psnr_db(video[None], reference[None])[0]))
    return outcomes


def print_table(outcomes: list[Outcome], prompts: int) -> None:
    base = statistics.mean(outcomes[0].seconds)
    print_header(f"{'threshold':>9} {'skipped':>12} {'sampling s':>11} {'speed-up':>9} {'PSNR dB mean':>13} {'min':>7}")
    print(f"{'off':>9} {'-':>12} {base:>11.3f} {1.0:>8.2f}x {'-':>13} {'-':>7}")
    for o in outcomes[1:]:
        mean_s = statistics.mean(o.seconds)
        psnr_mean, psnr_min = statistics.mean(o.psnr), min(o.psnr)
        print(f"{o.threshold:>9g} {f'{o.skipped}/{o.steps}':>12} {mean_s:>11.3f} {base / mean_s:>8.2f}x {psnr_mean:>13.1f} {psnr_min:>7.1f}")
    # the threshold that skipped least: its changes are (nearly) step to step, not drift over skipped steps
    fewest = min(outcomes[1:], key=lambda o: o.skipped)
    changes = sorted(fewest.changes)
    if changes:
        print(f"first block's change per step (at {fewest.threshold:g}, {fewest.skipped} skipped): min {changes[0]:.3g}, "
              f"median {statistics.median(changes):.3g}, max {changes[-1]:.3g}; {prompts} prompt(s), PSNR of the decoded video "
              "against the uncached one of the same seed")


def main(argv: list[str] | None = None) -> list[Outcome]:
    ours, args = parse_args(sys.argv[1:] if argv is None else argv)
    placement = place(args)
    prompts = list(prompts_with_id_token(islice(prompt_source(args, placement), ours.prompts), args))  # as sample_video.py prompts
    if not prompts:
        raise SystemExit("no prompts: set args.input_file (input_type txt)")
    if any(p.image_path for p in prompts):
        raise SystemExit("image-to-video prompts are not supported here: use a text-to-video config")
    seed_everything(args.seed)
    engine = build_sampling_engine(args, placement.device, verbose=False)
    print(f"{Path(args.base[0]).name if getattr(args, 'base', None) else 'config'}: {len(prompts)} prompt(s), "
          f"{engine.sampler.num_steps} steps, latents {tuple(latent_shape(engine, args))}, {placement.device}")
    outcomes = measure(engine, prompts, args, ours, placement.device)
    print_table(outcomes, len(prompts))
    return outcomes


if __name__ == "__main__":
    main()

"""sample_video.py with Ulysses sequence parallelism: 2 gloo ranks forming one model-parallel group
(`--model-parallel-size 2 --sequence-parallel`) sample the latents one process samples alone.

The tiny demo T2V model (2 heads, so one per rank) samples one prompt with the stochastic
DPM-Solver++(2M) sampler and dynamic CFG for 3 steps, which draws sampler noise in a first- and a
second-order step: any rank drawing other numbers than its partner would change the result. A hook
records the tokens each rank's attention received (a run that silently fell back to the whole
sequence fails) and every rank's sampled latents (they must be identical across the group); only
the group's first rank may write files.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from _parallel_testkit import assert_close, run_ranks
from omegaconf import OmegaConf

from cogvideox_sat.config import validate_run

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo"
STEPS = 3
TOKENS = 16 + 3 * 4 * 6  # text tokens + 3 latent frames of 8x12 latents in 2x2 patches


@pytest.fixture(scope="module")
def base_argv(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Sample arguments for the tiny T2V model: a tiny T5, 3 sampler steps, a saved checkpoint."""
    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5
    from cogvideox_sat.engine import SATVideoDiffusionEngine

    root = tmp_path_factory.mktemp("sp_sampling")
    t5 = {"is_trainable": False, "input_key": "txt", "ucg_rate": 0.1, "target": "cogvideox_sat.conditioner.FrozenT5Embedder",
          "params": {"model_dir": str(make_tiny_t5(root / "t5", d_model=32)), "max_length": 16}}
    sampler = {"num_steps": STEPS, "verbose": False, "guider_config": {"params": {"num_steps": STEPS}}}
    overlay = OmegaConf.create({"model": {"conditioner_config": {"params": {"emb_models": [t5]}}, "sampler_config": {"params": sampler}}})
    OmegaConf.save(overlay, root / "overlay.yaml")

    torch.manual_seed(0)
    model_config = OmegaConf.merge(OmegaConf.load(DEMO / "tiny_t2v.yaml"), overlay).model
    engine = SATVideoDiffusionEngine(argparse.Namespace(model_config=model_config, fp16=False, bf16=False, device="cpu"))
    (root / "ckpt" / "1").mkdir(parents=True)
    (root / "ckpt" / "latest").write_text("1")
    torch.save({"module": engine.state_dict()}, root / "ckpt" / "1" / "mp_rank_00_model_states.pt")
    (root / "prompts.txt").write_text("a red square slides right\n")
    return [
        "--base", str(DEMO / "tiny_t2v.yaml"), str(DEMO / "inference_tiny.yaml"), str(root / "overlay.yaml"),
        "--load", str(root / "ckpt"), "--input-file", str(root / "prompts.txt"), "--device", "cpu",
        "--only-save-latents", "--seed", "5",
    ]


def watched_sample(argv: Sequence[str]) -> dict[str, Any]:
    """sample(args) for `argv`, plus the token count of every attention call and every latent sampled."""
    from cogvideox_sat.cli import parse_run
    from cogvideox_sat.sampling import main

    tokens: list[int] = []
    latents: list[torch.Tensor] = []
    build = main.build_sampling_engine

    def build_and_watch(*args: Any, **kwargs: Any) -> Any:
        engine = build(*args, **kwargs)
        engine.diffusion_model.transformer.layers[0].attention.register_forward_pre_hook(lambda m, a: tokens.append(a[0].shape[1]))
        draw = engine.sample

        def sample_and_keep(*args: Any, **kwargs: Any) -> torch.Tensor:
            latents.append(draw(*args, **kwargs))
            return latents[-1]

        engine.sample = sample_and_keep
        return engine

    main.build_sampling_engine = build_and_watch
    try:
        written = main.sample(parse_run("sample", argv))
    finally:
        main.build_sampling_engine = build
    return {"written": written, "tokens": tokens, "latents": latents}


def _worker(rank: int, world: int, argv: list[str]) -> dict[str, Any]:
    from sat import mpu

    try:
        return watched_sample(argv)
    finally:
        mpu.destroy_model_parallel()


def _latent(written: list[Path]) -> torch.Tensor:
    (path,) = [p for p in written if p.name == "latent.pt"]
    return torch.load(path, weights_only=True)


def test_two_sequence_parallel_ranks_sample_what_one_process_samples(base_argv: list[str], tmp_path: Path) -> None:
    single = watched_sample([*base_argv, "--output-dir", str(tmp_path / "single")])
    out = tmp_path / "pair"
    pair = run_ranks(_worker, 2, tmp_path / "ranks", [*base_argv, "--output-dir", str(out), "--model-parallel-size", "2", "--sequence-parallel"])

    # 1. each rank's attention saw its half of the tokens, one DiT call (CFG-doubled batch) per step
    assert single["tokens"] == [TOKENS] * STEPS
    assert [r["tokens"] for r in pair] == [[TOKENS // 2] * STEPS, [TOKENS - TOKENS // 2] * STEPS]
    # 2. the group kept identical latents (same noise on both ranks) equal to one process's
    (first,), (second,) = [r["latents"] for r in pair]
    assert torch.equal(first, second)
    assert_close(first, single["latents"][0], "sampled latents")
    assert_close(_latent(pair[0]["written"]), _latent(single["written"]), "saved latents")
    # 3. only the group's first rank wrote, and nothing else is in the output folder
    assert pair[1]["written"] == []
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(pair[0]["written"])


def _validate(argv: list[str], world: int, monkeypatch: pytest.MonkeyPatch, **flags: Any) -> dict[str, list[str]]:
    """Validation problems (key -> messages) of a sampling run of `world` processes: the configs
    of `argv`, its checkpoint and prompt file, and `flags` as if given on the command line."""
    monkeypatch.setenv("WORLD_SIZE", str(world))
    configs = argv[argv.index("--base") + 1 : argv.index("--load")]
    paths = {"load": argv[argv.index("--load") + 1], "input_file": argv[argv.index("--input-file") + 1]}
    problems: dict[str, list[str]] = {}
    for problem in validate_run(configs, "sample", {**paths, **flags}).errors:
        problems.setdefault(problem.key, []).append(problem.message)
    return problems


def test_sampling_validation_checks_the_sequence_parallel_degree(base_argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _validate(base_argv, 2, monkeypatch, model_parallel_size=2, sequence_parallel=True) == {}
    (message,) = _validate(base_argv, 3, monkeypatch, model_parallel_size=3, sequence_parallel=True)["args.model_parallel_size"]
    assert "degree 3 does not divide num_attention_heads 2" in message
    (message,) = _validate(base_argv, 1, monkeypatch, sequence_parallel=True)["args.sequence_parallel"]
    assert "model_parallel_size >= 2" in message


def test_sequence_parallel_without_a_group_is_refused() -> None:
    from cogvideox_sat.sampling.placement import SamplingPlacement, enable_sequence_parallel

    with pytest.raises(ValueError, match="model-parallel group of >= 2 ranks"):
        enable_sequence_parallel(object(), SamplingPlacement(torch.device("cpu")))

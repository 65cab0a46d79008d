"""ID token, validation samples split across ranks, and sample_video.py reproducing them.

The runs are real train_video.py processes on the tiny demo models (CPU, fp32), with a VAE
loaded from a file so a separate sampling process builds the same one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from cogvideox_sat.id_token import caption_batch, prompt_with_id_token, run_id_token, sampling_id_token, with_id_token
from tests.config.helpers import write_yaml
from tests.train_runs import demo_overlay, make_demo_assets, run_dir_of, train_command

STEPS = 2
# the demo model's guidance scale (configs/demo/tiny_t2v.yaml), which validation records
GUIDANCE = __import__("yaml").safe_load((Path(__file__).resolve().parents[2] / "configs/demo/tiny_t2v.yaml").read_text())[
    "model"]["sampler_config"]["params"]["guider_config"]["params"]["scale"]


def test_id_token_goes_in_front_of_captions_and_of_prompts_lacking_it() -> None:
    assert with_id_token("A cat.", "sks") == "sks A cat."
    assert with_id_token("A cat.", "sks, ") == "sks, A cat."  # a token ending in whitespace is used as written
    assert with_id_token("A cat.", None) == "A cat."
    assert with_id_token("sks A cat.", "sks") == "sks sks A cat."  # training captions: always, as diffusers
    assert prompt_with_id_token("A cat.", "sks") == "sks A cat."
    assert prompt_with_id_token("A sks cat.", "sks") == "A sks cat."  # prompts that have it keep their wording
    batch = {"txt": ["a", "b"], "mp4": torch.zeros(2)}
    assert caption_batch(batch, "sks")["txt"] == ["sks a", "sks b"] and batch["txt"] == ["a", "b"]
    assert caption_batch(batch, None) is batch


def test_sampling_takes_the_token_of_the_run_unless_told(tmp_path: Path) -> None:
    import argparse

    run = tmp_path / "run"
    (run / "4").mkdir(parents=True)
    write_yaml(run / "training_config.yaml", {"args": {"id_token": "sks"}})
    assert run_id_token(run / "4") == "sks" and run_id_token(tmp_path) is None
    assert sampling_id_token(argparse.Namespace(id_token=None, lora_load=str(run / "4"), load="elsewhere")) == "sks"
    assert sampling_id_token(argparse.Namespace(id_token=None, lora_load=None, load=str(run))) == "sks"
    assert sampling_id_token(argparse.Namespace(id_token="", lora_load=str(run), load=None)) is None  # "" turns it off
    assert sampling_id_token(argparse.Namespace(id_token="tok", lora_load=str(run), load=None)) == "tok"


def test_id_token_no_embedder_reads_is_an_error(tmp_path: Path) -> None:
    from cogvideox_sat.config import validate_run
    from tests.conftest import REPO

    overlay = write_yaml(tmp_path / "o.yaml", {"model": {"conditioner_config": {"params": {"emb_models": [
        {"is_trainable": False, "input_key": "caption", "target": "cogvideox_sat.conditioner.FrozenT5Embedder",
         "params": {"model_dir": str(tmp_path), "max_length": 16}}]}}}, "args": {"id_token": "sks"}})
    run = validate_run([str(REPO / "configs/demo/tiny_t2v.yaml"), str(REPO / "configs/demo/inference_tiny.yaml"), str(overlay)], "sample")
    assert any(p.key == "args.id_token" and "no conditioner embedder reads the captions" in p.message for p in run.errors)
    blank = validate_run([str(REPO / "configs/demo/tiny_t2v.yaml"), str(REPO / "configs/demo/inference_tiny.yaml")], "sample", {"id_token": "  "})
    assert any(p.key == "args.id_token" for p in blank.errors)


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo T5 and clips, plus a fixed VAE file (the demo VAE is otherwise random per process)."""
    from tests.sampling.conftest import build_engine

    root = make_demo_assets(tmp_path_factory.mktemp("val_assets"))
    engine = build_engine("tiny_t2v", root / "t5", seed=7)
    torch.save({"state_dict": engine.first_stage_model.state_dict()}, root / "vae.pt")
    return root


def _overlay(assets: Path, save: Path, **args) -> dict:
    extra = demo_overlay(assets, save, train_iters=2, save_interval=2, eval_interval=2, eval_iters=1, valid_data=[str(assets / "data")], **args)
    extra["model"]["first_stage_config"] = {"params": {"ckpt_path": str(assets / "vae.pt")}}
    extra["model"]["sampler_config"] = {"params": {"num_steps": STEPS, "verbose": False, "guider_config": {"params": {"num_steps": STEPS}}}}
    return extra


def _train(tmp: Path, model: str, extra: dict, processes: int = 1) -> Path:
    cmd, env = train_command(tmp, model, extra, processes=processes)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return run_dir_of(Path(extra["args"]["save"]))


def _samples(run: Path, iteration: int = 2) -> list[tuple[Path, dict]]:
    folders = sorted((run / "samples" / f"iter_{iteration:06d}").glob("*/0"))
    return [(f, json.loads((f / "sample.json").read_text())) for f in folders]


def _reproduce(folder: Path) -> Path:
    import sample_video

    sample_video.main(["--from-validation", str(folder), "--device", "cpu"])
    (video,) = (folder / "reproduced").glob("*/0/000000.mp4")
    return video


def _assert_same_video(validation: Path, reproduced: Path) -> None:
    # the contact sheet holds all 9 frames losslessly; the mp4 must come out byte for byte too
    a, b = iio.imread(validation / "000000.png"), iio.imread(reproduced.with_suffix(".png"))
    assert np.array_equal(a, b), f"frames differ by up to {np.abs(a.astype(int) - b).max()}"
    assert (validation / "000000.mp4").read_bytes() == reproduced.read_bytes()


@pytest.mark.slow
def test_sample_video_reproduces_validation_of_base_lora_and_i2v_runs(assets: Path, tmp_path: Path) -> None:
    # 1. full fine-tune with an ID token: two validation prompts, each recorded
    base = _train(tmp_path, "tiny_t2v.yaml", _overlay(assets, tmp_path / "base", eval_batch_size=2, id_token="sks"))
    samples = _samples(base)
    assert len(samples) == 2
    for folder, record in samples:
        assert record["prompt"] == "sks " + record["caption"] and record["id_token"] == "sks"
        assert record["seed"] == 42 + int(folder.parent.name.split("_")[0])
        assert (record["steps"], record["guidance"]["scale"], record["lora"]) == (STEPS, GUIDANCE, None)
        assert record["sampling_image_size"] == [64, 96] and record["frames"] == 9 and record["load"] == str(base.resolve() / "2")
        _assert_same_video(folder, _reproduce(folder))

    # 2. LoRA on top of that run: adapters only in the checkpoint, base from args.load
    lora = _train(tmp_path, "tiny_t2v_lora.yaml", _overlay(assets, tmp_path / "lora", eval_batch_size=1, load=str(base), mode="finetune", id_token="sks"))
    ((folder, record),) = _samples(lora)
    assert record["lora"] == {"r": 4, "lora_alpha": 4.0, "scale": 1.0}
    assert (record["load"], record["lora_load"]) == (str(base.resolve()), str(lora.resolve() / "2"))
    _assert_same_video(folder, _reproduce(folder))

    # 3. image-to-video: the clip's first frame is saved beside the sample and conditions both
    from tests.sampling.conftest import build_engine

    torch.save({"state_dict": build_engine("tiny_i2v", assets / "t5", seed=7).first_stage_model.state_dict()}, tmp_path / "vae_i2v.pt")
    extra = _overlay(assets, tmp_path / "i2v", eval_batch_size=1)
    extra["model"]["first_stage_config"]["params"]["ckpt_path"] = str(tmp_path / "vae_i2v.pt")
    ((folder, record),) = _samples(_train(tmp_path, "tiny_i2v.yaml", extra))
    assert record["image"] == "image.png" and iio.imread(folder / "image.png").shape == (64, 96, 3)
    _assert_same_video(folder, _reproduce(folder))


@pytest.mark.slow
def test_validation_prompts_are_split_across_two_gloo_ranks(assets: Path, tmp_path: Path) -> None:
    run = _train(tmp_path, "tiny_t2v.yaml", _overlay(assets, tmp_path / "two", eval_batch_size=1), processes=2)
    samples = _samples(run)
    # one prompt per rank, each sampled once, from different clips; rank 0 wrote and logged both
    assert sorted(r["rank"] for _, r in samples) == [0, 1]
    assert sorted(r["seed"] for _, r in samples) == [42, 43]
    assert len({r["prompt"] for _, r in samples}) == 2
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "val_videos" in line]
    assert len(logged) == 1 and sorted(logged[0]["val_videos"]) == ["input_00", "input_01", "sample_00", "sample_01"]
    assert all(Path(p).is_file() for p in logged[0]["val_videos"].values())
    # the video rank 1 drew is the one a single process draws from its record
    (folder, _), = [(f, r) for f, r in samples if r["rank"] == 1]
    _assert_same_video(folder, _reproduce(folder))


def test_from_validation_says_when_the_iteration_was_not_saved(tmp_path: Path) -> None:
    from cogvideox_sat.sampling.reproduce import RECORD_FILE, ReproduceError, expand_from_validation

    folder = tmp_path / "run" / "samples" / "iter_000100" / "0_a_cat" / "0"
    folder.mkdir(parents=True)
    record = {"iteration": 100, "run": str(tmp_path / "run"), "load": str(tmp_path / "run" / "100"), "lora_load": None}
    (folder / RECORD_FILE).write_text(json.dumps(record))
    assert expand_from_validation(["--seed", "1"]) == ["--seed", "1"]
    with pytest.raises(ReproduceError, match="iteration 100 was validated but not saved"):
        expand_from_validation(["--from-validation", str(folder)])
    with pytest.raises(ReproduceError, match="no sample.json"):
        expand_from_validation(["--from-validation", str(tmp_path)])

"""`sample(args)` end to end on the tiny demo models (CPU, 3 latent frames at 64x96, 2 steps):
videos and contact sheets on disk, seeds, LoRA on top of a base, image-to-video, stdin, errors."""

from __future__ import annotations

import io
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from conftest import FRAMES, HEIGHT, LATENT, WIDTH

from cogvideox_sat.sampling import sample
from cogvideox_sat.sampling.weights import LoraCheckpointError


def latents(paths: list[Path]) -> list[torch.Tensor]:
    return [torch.load(p, weights_only=True) for p in paths if p.name == "latent.pt"]


def frames(path: Path):
    return iio.imread(path)  # (T, H, W, 3) uint8


def test_text_to_video_writes_mp4_and_contact_sheet(make_args):
    args = make_args("tiny_t2v", ["a red square slides right", "a green circle / bounces"])
    written = sample(args)
    out = Path(args.output_dir)
    mp4s = sorted(p for p in written if p.suffix == ".mp4")
    assert mp4s == [out / "0_a_red_square_slides_right" / "0" / "000000.mp4", out / "1_a_green_circle__bounces" / "0" / "000000.mp4"]
    video = frames(mp4s[0])
    assert video.shape == (FRAMES, HEIGHT, WIDTH, 3)  # 3 latent frames -> 1 + 4 * 2 frames
    assert video.std() > 1.0  # not a blank video
    sheet = iio.imread(mp4s[0].with_suffix(".png"))
    assert sheet.shape == (3 * HEIGHT, 3 * WIDTH, 3)  # 9 frames in a 3 x 3 grid
    assert (mp4s[1].parent / "text.txt").read_text() == "a green circle / bounces"


def test_same_seed_same_video_other_seed_other_video(make_args):
    first = sample(make_args("tiny_t2v", ["a cat"], "--seed", "5"))
    again = sample(make_args("tiny_t2v", ["a cat"], "--seed", "5"))
    other = sample(make_args("tiny_t2v", ["a cat"], "--seed", "6", "--only-save-latents"))
    again_latents = sample(make_args("tiny_t2v", ["a cat"], "--seed", "5", "--only-save-latents"))
    assert (frames(first[0]) == frames(again[0])).all()
    assert not torch.equal(latents(other)[0], latents(again_latents)[0])


def test_a_prompt_does_not_depend_on_what_was_sampled_before(make_args):
    both = latents(sample(make_args("tiny_t2v", ["a cat", "a dog"], "--only-save-latents")))
    alone = latents(sample(make_args("tiny_t2v", ["", "a dog"], "--only-save-latents")))  # line 1 still
    assert len(both) == 2 and len(alone) == 1
    assert torch.equal(both[1], alone[0]) and not torch.equal(both[0], both[1])


def test_batch_size_gives_distinct_samples_per_prompt(make_args):
    written = sample(make_args("tiny_t2v", ["a cat"], "--batch-size", "2", "--only-save-latents"))
    a, b = latents(written)
    assert [p.parent.name for p in written if p.name == "latent.pt"] == ["0", "1"]
    assert not torch.equal(a, b)


def test_only_latents(make_args):
    args = make_args("tiny_t2v", ["a cat"], "--only-save-latents")
    written = sample(args)
    folder = Path(args.output_dir) / "0_a_cat" / "0"
    assert sorted(p.name for p in folder.iterdir()) == ["latent.pt", "text.txt"]
    (z,) = latents(written)
    t, c, h, w = LATENT
    assert z.shape == (1, c, t, h, w) and torch.isfinite(z).all()  # official layout, unscaled


def test_lora_on_top_of_a_base(make_args, assets):
    base = latents(sample(make_args("tiny_t2v", ["a cat"], "--only-save-latents")))[0]
    # a LoRA model on the plain base: fresh adapters (B = 0) change nothing
    fresh = latents(sample(make_args("tiny_t2v_lora", ["a cat"], "--only-save-latents")))[0]
    on = latents(sample(make_args("tiny_t2v_lora", ["a cat"], "--only-save-latents", lora_load=str(assets["lora"]))))[0]
    merged = latents(
        sample(make_args("tiny_t2v_lora", ["a cat"], "--only-save-latents", lora_load=str(assets["lora"]), lora_merge=True))
    )[0]
    assert torch.equal(fresh, base)
    assert (on - base).abs().max() > 1e-2
    torch.testing.assert_close(merged, on, atol=1e-4, rtol=1e-4)


def test_lora_only_checkpoint_without_base_is_an_error(make_args, assets):
    args = make_args("tiny_t2v_lora", ["a cat"], load=assets["lora"])
    with pytest.raises(LoraCheckpointError, match="only LoRA adapters") as err:
        sample(args)
    assert "--lora-load" in str(err.value) and str(assets["t2v"]) in str(err.value)  # names the recorded base


def test_lora_weights_need_a_lora_model(make_args, assets):
    with pytest.raises(LoraCheckpointError, match="no LoRA layers"):
        sample(make_args("tiny_t2v", ["a cat"], lora_load=str(assets["lora"])))


def test_image_to_video_uses_the_given_image(make_args, assets):
    def run(image: Path, *flags: str) -> list[Path]:
        return sample(make_args("tiny_i2v", [f"a moving square@@{image}"], "--image2video", *flags))

    red, red_again, blue = (latents(run(p, "--only-save-latents"))[0] for p in (assets["red"], assets["red"], assets["blue"]))
    assert torch.equal(red, red_again)
    assert (red - blue).abs().max() > 1e-3
    # a 40 x 170 image is brought to the sampling size; the video has that size
    (mp4,) = [p for p in run(assets["wide"]) if p.suffix == ".mp4"]
    assert frames(mp4).shape == (FRAMES, HEIGHT, WIDTH, 3)


def test_missing_image_is_reported_before_sampling(make_args, tmp_path):
    args = make_args("tiny_i2v", [f"a square@@{tmp_path / 'nope.png'}"], "--image2video")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        sample(args)
    assert not Path(args.output_dir).exists()


def test_task_mismatch_errors(make_args, assets):
    with pytest.raises(ValueError, match="image-to-video model"):
        sample(make_args("tiny_i2v", ["a square"], "--only-save-latents"))
    with pytest.raises(ValueError, match="text-to-video"):
        sample(make_args("tiny_t2v", [f"a square@@{assets['red']}"], "--image2video"))


def test_prompts_from_stdin(make_args, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("first prompt\n\nthird prompt\n"))
    args = make_args("tiny_t2v", [], "--input-type", "cli", "--only-save-latents")
    written = sample(args)
    assert sorted(p.parent.parent.name for p in written if p.name == "latent.pt") == ["0_first_prompt", "2_third_prompt"]


def test_bf16_sampling(make_args, tmp_path):
    # one latent frame at half size: bf16 conv3d has no fast CPU kernel without AVX512-BF16/AMX,
    # and the full-size bf16 decode alone took ~100 s on CI's CPU (the VAE's bf16 numbers are
    # pinned in tests/vae/test_vae_official_parity.py)
    small = tmp_path / "small.yaml"
    small.write_text("args:\n  sampling_num_frames: 1\n  sampling_image_size: [32, 48]\n")
    written = sample(make_args("tiny_t2v", ["a cat"], "--bf16", configs=[small]))
    (mp4,) = [p for p in written if p.suffix == ".mp4"]
    assert frames(mp4).shape == (1, HEIGHT // 2, WIDTH // 2, 3)
    (z,) = latents(sample(make_args("tiny_t2v", ["a cat"], "--bf16", "--only-save-latents")))
    assert z.dtype == torch.bfloat16 and torch.isfinite(z.float()).all()


def test_checkpoint_checks(make_args, assets, tmp_path, capsys):
    from cogvideox_sat.io import CheckpointMismatchError
    from conftest import save_sat

    # another model's weights: wrong shapes are an error even with force_inference
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        sample(make_args("tiny_t2v", ["a cat"], "--force-inference", "true", load=assets["i2v"]))
    # a key missing: an error unless force_inference (the official meaning), then loudly reported
    state = torch.load(assets["t2v"] / "1" / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    dropped = next(k for k in state if k.startswith("model.diffusion_model.") and k.endswith("final_layer.linear.weight"))
    partial = save_sat(tmp_path / "partial", {k: v for k, v in state.items() if k != dropped})
    with pytest.raises(CheckpointMismatchError, match="missing in checkpoint"):
        sample(make_args("tiny_t2v", ["a cat"], "--force-inference", "false", "--only-save-latents", load=partial))
    capsys.readouterr()
    assert sample(make_args("tiny_t2v", ["a cat"], "--force-inference", "true", "--only-save-latents", load=partial))
    out = capsys.readouterr().out
    assert "WARNING: checkpoint does not match the model" in out and dropped.removeprefix("model.diffusion_model.") in out


def test_lora_load_report_is_clean(make_args, assets, capsys):
    sample(make_args("tiny_t2v_lora", ["a cat"], "--only-save-latents", lora_load=str(assets["lora"])))
    out = capsys.readouterr().out
    assert "WARNING" not in out and f"from {assets['lora']}" in out
    n_adapters = 2 * 8  # 2 layers x (query_key_value: 3 A + 3 B, dense: 1 A + 1 B)
    assert f"loaded {n_adapters + 1} tensors" in out  # + the position table

"""Sampling building blocks without a model: prompt parsing and sharding, stdin, the I2V image
transform, decode chunking and frame counts, output names, inference overrides, LoRA detection."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cogvideox_sat.sampling.decoding import chunk_sizes, decode_options, num_video_frames
from cogvideox_sat.sampling.images import load_condition_image
from cogvideox_sat.sampling.main import INFERENCE_OVERRIDES, sample_seed, sampling_model_config, step_cache_note
from cogvideox_sat.sampling.outputs import sample_folder
from cogvideox_sat.sampling.prompts import Prompt, parse_prompt, read_prompt_file, read_stdin
from cogvideox_sat.io.lora_state import is_lora_only, lora_layer_names

# ---- prompts --------------------------------------------------------------------------------


def test_parse_prompt_text_and_image():
    assert parse_prompt("  a cat  \n", 3, image2video=False) == Prompt(3, "a cat")
    # text-to-video keeps '@@' as text; image-to-video splits at the last '@@'
    assert parse_prompt("a@@b", 0, image2video=False).text == "a@@b"
    assert parse_prompt("a dog @@ images/dog.png\n", 1, image2video=True) == Prompt(1, "a dog", "images/dog.png")


@pytest.mark.parametrize("line", ["just text", "text@@", "text@@   "])
def test_image_to_video_line_without_image_is_an_error(line):
    with pytest.raises(ValueError, match="prompt@@image_path"):
        parse_prompt(line, 4, image2video=True)


def test_prompt_file_sharding_keeps_line_numbers(tmp_path: Path):
    path = tmp_path / "p.txt"
    path.write_text("zero\none\n\nthree\nfour\n")
    everything = list(read_prompt_file(path, False))
    assert [(p.index, p.text) for p in everything] == [(0, "zero"), (1, "one"), (3, "three"), (4, "four")]
    shards = [list(read_prompt_file(path, False, rank, 2)) for rank in range(2)]
    assert [p.index for p in shards[0]] == [0, 4] and [p.index for p in shards[1]] == [1, 3]
    assert sorted(p.index for s in shards for p in s) == [p.index for p in everything]


def test_stdin_prompts_until_end_of_input():
    stream = io.StringIO("first one\n\nthird one\n")
    assert list(read_stdin(False, stream=stream)) == [Prompt(0, "first one"), Prompt(2, "third one")]
    stream = io.StringIO("a@@x.png\nb@@y.png\n")
    assert [p.image_path for p in read_stdin(True, rank=1, world_size=2, stream=stream)] == ["y.png"]


class FakeChannel:
    """What a broadcast does for two ranks: the source's lines reach the other rank."""

    def __init__(self, is_source: bool, lines: list[str]):
        self.is_source, self.lines = is_source, iter(lines + [None])

    def share(self, line):
        return line if self.is_source else next(self.lines)


def test_stdin_under_several_ranks_reads_only_on_the_source():
    source = list(read_stdin(False, 0, 2, stream=io.StringIO("p0\np1\np2\n"), channel=FakeChannel(True, [])))
    untouched = io.StringIO("must not be read\n")
    other = list(read_stdin(False, 1, 2, stream=untouched, channel=FakeChannel(False, ["p0\n", "p1\n", "p2\n"])))
    assert [p.text for p in source] == ["p0", "p2"] and [p.text for p in other] == ["p1"]
    assert untouched.tell() == 0


def test_sample_seeds_are_unique_per_prompt_and_sample():
    seeds = {sample_seed(42, i, s, 3) for i in range(5) for s in range(3)}
    assert len(seeds) == 15 and sample_seed(42, 0, 0, 3) == 42


# ---- image-to-video image -------------------------------------------------------------------


def _three_bands(path: Path, height: int, width: int) -> Path:
    from PIL import Image

    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    third = width // 3
    pixels[:, :third] = (255, 0, 0)
    pixels[:, third : 2 * third] = (0, 255, 0)
    pixels[:, 2 * third :] = (0, 0, 255)
    Image.fromarray(pixels).save(path)
    return path


def test_condition_image_is_resized_and_center_cropped_to_the_sampling_size(tmp_path: Path):
    # 60 x 270: scaled to height 64 (width 288), then the middle 96 columns: the green band only
    image = load_condition_image(_three_bands(tmp_path / "bands.png", 60, 270), (64, 96))
    assert image.shape == (1, 3, 1, 64, 96) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    center = image[0, :, 0, :, 8:-8].mean(dim=(1, 2))
    assert center[1] > 0.9 and center[0] < -0.9 and center[2] < -0.9  # squashing would keep red/blue


def test_condition_image_size_follows_the_request(tmp_path: Path):
    path = _three_bands(tmp_path / "tall.png", 300, 90)
    assert load_condition_image(path, (128, 64)).shape == (1, 3, 1, 128, 64)


def test_missing_condition_image_says_which(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        load_condition_image(tmp_path / "nothere.png", (64, 96))


# ---- decoding -------------------------------------------------------------------------------


def test_frame_counts():
    assert num_video_frames(13, 1) == 49 and num_video_frames(3, 1) == 9
    assert num_video_frames(22, 2) == 81  # CogVideoX 1.5: one padding latent in front
    assert num_video_frames(13, 1, official=True) == 48 and num_video_frames(22, 2, official=True) == 84


def test_decode_options():
    t2v, v15 = SimpleNamespace(temporal_patch_size=1), SimpleNamespace(temporal_patch_size=2)
    assert decode_options(t2v, 13) == {"drop_first_latent": False, "first_frame_separate": True, "chunk_sizes": None}
    assert decode_options(v15, 22, chunk_frames=4) == {
        "drop_first_latent": True, "first_frame_separate": True, "chunk_sizes": [4, 4, 4, 4, 5]}
    assert decode_options(t2v, 13, official=True) == {"chunk_sizes": None}


@pytest.mark.parametrize("frames, per, expected", [(13, 4, [4, 4, 5]), (13, 2, [2, 2, 2, 2, 2, 3]), (13, 20, [13]), (3, None, None)])
def test_chunk_sizes_never_leave_a_single_frame_chunk(frames, per, expected):
    assert chunk_sizes(frames, per) == expected


# ---- outputs, config, weights ----------------------------------------------------------------


def test_sample_folder_uses_the_official_names(tmp_path: Path):
    assert sample_folder(tmp_path, 7, "a cat / a dog", 2) == tmp_path / "7_a_cat__a_dog" / "2"
    assert len(sample_folder(tmp_path, 0, "x" * 300, 0).parent.name) == len("0_") + 120


def test_inference_overrides_apply_only_where_the_keys_exist():
    cfg = OmegaConf.create({
        "first_stage_config": {"params": {"cp_size": 4}},
        "network_config": {"params": {"transformer_args": {"model_parallel_size": 2, "checkpoint_activations": True}}},
    })
    out = sampling_model_config(cfg)
    assert out.first_stage_config.params.cp_size == 1
    assert out.network_config.params.transformer_args == {"model_parallel_size": 1, "checkpoint_activations": False}
    assert "loss_fn_config" not in out and cfg.first_stage_config.params.cp_size == 4  # input untouched
    assert len(INFERENCE_OVERRIDES) == 4


def test_lora_only_detection():
    layer = "transformer.layers.0.attention.dense"
    adapters = {f"{layer}.matrix_A.0": torch.zeros(1), f"{layer}.matrix_B.0": torch.zeros(1)}
    assert lora_layer_names(adapters) == {layer}
    assert is_lora_only(adapters)
    assert not is_lora_only({**adapters, f"{layer}.original.weight": torch.zeros(1)})  # official LoRA run
    assert not is_lora_only({f"{layer}.weight": torch.zeros(1)})  # plain base


def test_local_device_choices(monkeypatch):
    from cogvideox_sat.sampling.placement import local_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_device(-1) == torch.device("cpu") and local_device("cpu") == torch.device("cpu")
    assert local_device(1) == torch.device("cuda", 1) and local_device("2") == torch.device("cuda", 2)
    assert local_device("cuda:3") == torch.device("cuda", 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert local_device(-1) == torch.device("cuda", 5)


# ---- step cache report ----------------------------------------------------------------------


@torch.no_grad()
def test_the_sample_line_reports_the_step_cache_only_when_it_is_on():
    from cogvideox_sat.diffusion.step_cache import StepCache

    assert step_cache_note(SimpleNamespace(sampler=SimpleNamespace(last_step_cache=None))) == ""
    cache = StepCache(0.5)
    hidden = torch.ones(2, 3)
    for shift in (1.0, 1.2, 1.6):  # changes 0.2 (skipped) and 0.6 against the first step's residual
        cache.run(hidden, lambda h, s=shift: h + s, lambda h: h + 10)
    note = step_cache_note(SimpleNamespace(sampler=SimpleNamespace(last_step_cache=cache)))
    assert note == ", step cache: skipped 1/3 steps at 0.5, change per step min/median/max 0.2/0.4/0.6"

"""SFTDataset: official constructor and items, both layouts, frame sampling on real mp4s, I2V images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datatest_helpers import H, W, decoded_indices
from omegaconf import OmegaConf

from cogvideox_sat.data import SFTDataset
from cogvideox_sat.data.transforms import resize_center_crop, resize_size
from cogvideox_sat.registry import resolve_target

OFFICIAL_PARAMS = {"video_size": [16, 24], "fps": 8, "max_num_frames": 9, "skip_frms_num": 3.0}


def test_official_target_and_create_dataset_function(sft_folder):
    # the official training: data_class.create_dataset_function(path, args, **data.params)
    cls = resolve_target("data_video.SFTDataset")
    assert cls is SFTDataset
    params = OmegaConf.create({"video_size": [16, 24], "fps": 8, "max_num_frames": 9, "skip_frms_num": 3.0})
    ds = cls.create_dataset_function(str(sft_folder), None, **params)
    assert len(ds) == 4
    item = ds[0]
    assert set(item) == {"mp4", "txt", "num_frames", "fps"} or set(item) == {"mp4", "txt", "num_frames", "fps", "image"}


def test_official_layout_items(sft_folder):
    ds = SFTDataset(str(sft_folder), layout="official", **OFFICIAL_PARAMS)
    assert len(ds) == 4
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"mp4", "txt", "num_frames", "fps"}
        mp4 = item["mp4"]
        assert mp4.shape == (9, 3, 16, 24) and mp4.dtype == torch.float32
        assert mp4.min() >= -1 and mp4.max() <= 1 and mp4.std() > 0.05
        label = sft_folder / "labels" / f"clip_{i:04d}.txt"
        assert item["txt"] == label.read_text().splitlines()[0]
        # 9 frames, 3 skipped at each end: 3 usable -> the largest 4k+1 is 1, padded to 9
        assert item["num_frames"] == 1 and item["fps"] == 8
        assert torch.equal(mp4[0], mp4[-1])


def test_frames_differ_and_follow_time(sft_folder):
    ds = SFTDataset(str(sft_folder), video_size=[H, W], fps=8, max_num_frames=9, skip_frms_num=0, layout="official")
    mp4 = ds[0]["mp4"]
    assert ds[0]["num_frames"] == 9
    diffs = (mp4[1:] - mp4[:-1]).abs().mean(dim=(1, 2, 3))
    assert (diffs > 1e-3).all(), "consecutive frames of a moving clip must differ (no padding here)"


def test_diffusers_layout_matches_official(sft_folder):
    official = SFTDataset(str(sft_folder), layout="official", **OFFICIAL_PARAMS)
    (sft_folder / "images.txt").unlink()
    diffusers = SFTDataset(str(sft_folder), layout="auto", **OFFICIAL_PARAMS)  # auto finds prompts.txt + videos.txt
    assert len(diffusers) == len(official) == 4
    for i in range(4):
        a, b = official[i], diffusers[i]
        assert a["txt"] == b["txt"]
        assert torch.equal(a["mp4"], b["mp4"])
        assert "image" not in b


def test_diffusers_misaligned_lists_fail_at_start(sft_folder):
    (sft_folder / "prompts.txt").write_text("only one prompt\n")
    with pytest.raises(ValueError, match="aligned line by line"):
        SFTDataset(str(sft_folder), layout="diffusers", **OFFICIAL_PARAMS)


def test_i2v_first_frame_and_images_txt(sft_folder):
    ds = SFTDataset(str(sft_folder), layout="official", with_image=True, **OFFICIAL_PARAMS)
    item = ds[1]
    assert item["image"].shape == (1, 3, 16, 24)
    assert torch.equal(item["image"][0], item["mp4"][0])
    # images.txt: the listed png (the clip's first source frame, lossless) resized like the video
    ds = SFTDataset(str(sft_folder), video_size=[H, W], fps=8, max_num_frames=9, skip_frms_num=0, layout="diffusers")
    item = ds[2]
    import imageio.v2 as imageio

    png = torch.from_numpy(imageio.imread(sft_folder / "images" / "clip_0002.png")).permute(2, 0, 1)[None]
    expected = (png.float() - 127.5) / 127.5
    assert torch.equal(item["image"], expected)
    # the png is lossless, the video lossy: close but not equal
    assert (item["image"][0] - item["mp4"][0]).abs().mean() < 0.05


def test_official_sampling_on_real_clip(coded_clip, tmp_path):
    # 40 frames at 24 fps; target 8 fps, 9 frames, skip 1: case A, end = int(1 + 9/8*24) = 28,
    # stride (28 - 1) // 9 = 3 -> source frames 1, 4, ..., 25
    folder = tmp_path / "one"
    (folder / "videos").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "videos" / "x.mp4").write_bytes(coded_clip("coded_40f_24fps.mp4").read_bytes())
    (folder / "labels" / "x.txt").write_text("gray ramp\nsecond line ignored\n")
    ds = SFTDataset(str(folder), video_size=[H, W], fps=8, max_num_frames=9, skip_frms_num=1)
    item = ds[0]
    assert item["txt"] == "gray ramp"
    assert decoded_indices(item["mp4"]) == list(range(1, 28, 3))
    assert item["num_frames"] == 9
    # exact fps sampling gives the same here (24 / 8 is an integer)
    exact = SFTDataset(str(folder), video_size=[H, W], fps=8, max_num_frames=9, skip_frms_num=1, fps_sampling="exact")
    assert decoded_indices(exact[0]["mp4"]) == list(range(1, 28, 3))
    # 10 fps target: the official integer stride (int(1 + 9/10*24) - 1) // 9 = 2 samples at 12 fps;
    # exact sampling takes frame floor(k * 2.4) + 1
    official = SFTDataset(str(folder), video_size=[H, W], fps=10, max_num_frames=9, skip_frms_num=1)
    assert decoded_indices(official[0]["mp4"]) == list(range(1, 19, 2))
    exact = SFTDataset(str(folder), video_size=[H, W], fps=10, max_num_frames=9, skip_frms_num=1, fps_sampling="exact")
    assert decoded_indices(exact[0]["mp4"]) == [1 + int(np.floor(k * 2.4 + 1e-9)) for k in range(9)]


def test_short_clip_is_padded_with_last_frame(coded_clip, tmp_path):
    # 40 frames, 49 wanted at 24 fps (no resampling): case C takes 4k+1 = 37 of the 38 frames
    # left after skipping 1 at each end, then repeats the last one
    folder = tmp_path / "short"
    (folder / "videos").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "videos" / "x.mp4").write_bytes(coded_clip("coded_40f_24fps.mp4").read_bytes())
    (folder / "labels" / "x.txt").write_text("gray ramp\n")
    item = SFTDataset(str(folder), video_size=[H, W], fps=24, max_num_frames=49, skip_frms_num=1)[0]
    assert item["mp4"].shape[0] == 49 and item["num_frames"] == 37
    assert decoded_indices(item["mp4"]) == list(range(1, 38)) + [37] * 12


def test_resize_keeps_aspect_and_crops_center():
    # a 32x40 frame whose columns are numbered: resizing to height 16 gives width 20, then the
    # center 16 columns are kept (2 dropped at each side)
    cols = torch.arange(40, dtype=torch.uint8).mul(6).expand(1, 3, 32, 40)
    out = resize_center_crop(cols, (16, 16))
    assert out.shape == (1, 3, 16, 16) and out.dtype == torch.uint8
    full = resize_center_crop(cols, (16, 20))
    assert torch.equal(out, full[..., 2:18])
    # a tall target: width matches first, rows are cropped
    tall = resize_center_crop(cols, (32, 20))
    assert tall.shape == (1, 3, 32, 20)
    # same size: unchanged
    assert torch.equal(resize_center_crop(cols, (32, 40)), cols)


def test_resize_matches_torchvision_when_available():
    # the official loader resizes with torchvision (not our dependency); check bit-equality
    tvf = pytest.importorskip("torchvision.transforms.functional")
    from torchvision.transforms import InterpolationMode

    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 37, 61), dtype=torch.uint8, generator=g)
    for target in [(16, 24), (48, 40), (30, 70), (20, 20)]:
        ref = tvf.resize(frames, list(resize_size(37, 61, target)), interpolation=InterpolationMode.BICUBIC)
        rh, rw = ref.shape[-2:]
        top, left = (rh - target[0]) // 2, (rw - target[1]) // 2
        assert torch.equal(resize_center_crop(frames, target), ref[..., top : top + target[0], left : left + target[1]])


def test_fast_bilinear_resize_is_close_to_official():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(3, 3, 12, 20, generator=g), size=(90, 150), mode="bilinear")
    frames = (smooth * 255).round().to(torch.uint8)
    exact = resize_center_crop(frames, (32, 48))
    fast = resize_center_crop(frames, (32, 48), mode="bilinear")
    assert fast.shape == exact.shape == (3, 3, 32, 48) and fast.dtype == torch.uint8
    diff = (fast.float() - exact.float()).abs()
    assert 0 < diff.mean() < 4.0 and diff.max() < 32  # a softer kernel, not different content


def test_resize_mode_is_checked(sft_folder):
    with pytest.raises(ValueError, match="resize must be one of"):
        SFTDataset(str(sft_folder), resize="nearest", **OFFICIAL_PARAMS)

"""Still images as one-frame clips, train_data_weights and split (SAT semantics, checked against
SwissArmyTransformer's own classes), single-shape batches, exact resume of a mixed stream, and the
latent cache with stills."""

from __future__ import annotations

import argparse
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from datatest_helpers import TinyEncoders

from cogvideox_sat.data import NoUsableSamples, SFTDataset, VideoDataset, build_latent_cache
from cogvideox_sat.data.mixing import WeightedConcat, WeightedInterleave, check_weights
from cogvideox_sat.data.split import parse_split, should_split, split_dataset
from cogvideox_sat.data.transforms import resize_center_crop, to_unit_range
from cogvideox_sat.demo.clips import make_sft_folder
from cogvideox_sat.demo.shards import write_shard
from cogvideox_sat.training.data import BatchStream, build_loader, build_training_data
from tests.train_runs import make_still_folder

H, W = 32, 40
PARAMS = {"video_size": [H, W], "fps": 8, "max_num_frames": 9, "skip_frms_num": 0.0, "still_images": True}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """clips/: 4 videos (9 frames); stills/: 6 png stills of another size (48x64)."""
    root = tmp_path_factory.mktemp("mix")
    make_sft_folder(root / "clips", n_clips=4, num_frames=9, height=H, width=W, fps=8)
    make_still_folder(root / "stills", n=6, height=48, width=64)
    return root


def _sat_configure_data():
    return pytest.importorskip("sat.data_utils.configure_data")


# ---- stills -------------------------------------------------------------------------------------
def test_still_folder_items_are_one_frame_clips_of_the_image(folders: Path) -> None:
    import imageio.v2 as imageio

    ds = SFTDataset(str(folders / "stills"), **PARAMS)
    assert len(ds) == 6
    item = ds[2]
    assert item["mp4"].shape == (1, 3, H, W) and item["num_frames"] == 1
    assert item["txt"] == (folders / "stills" / "labels" / "still_0002.txt").read_text().strip()
    pixels = torch.from_numpy(imageio.imread(folders / "stills" / "images" / "still_0002.png")).permute(2, 0, 1)[None]
    assert torch.equal(item["mp4"], to_unit_range(resize_center_crop(pixels, (H, W))))


def test_images_are_not_samples_unless_asked(folders: Path) -> None:
    params = {**PARAMS, "still_images": False}
    with pytest.raises(NoUsableSamples, match="still_images: true"):
        SFTDataset(str(folders / "stills"), **params)
    # a video folder keeps its old behaviour: one shape, no per-sample ids
    clips = SFTDataset(str(folders / "clips"), **PARAMS)
    assert clips.bucket_ids is None and clips.shapes == [(9, H, W)]


def test_one_folder_with_videos_and_stills_keeps_shapes_apart(folders: Path, tmp_path: Path) -> None:
    import shutil

    both = tmp_path / "both"
    shutil.copytree(folders / "clips", both)
    shutil.copytree(folders / "stills" / "images", both / "images")
    for f in (folders / "stills" / "labels").iterdir():
        shutil.copy(f, both / "labels")
    ds = SFTDataset(str(both), **PARAMS)
    assert len(ds) == 10 and ds.shapes == [(9, H, W), (1, H, W)]
    loader, sampler = build_loader(ds, batch_size=2, num_workers=0, rank=0, world_size=1, seed=0)
    shapes = Counter(tuple(b["mp4"].shape[1:2]) for b in loader)
    assert shapes == {(9,): 2, (1,): 3}  # 4 clips -> 2 batches, 6 stills -> 3 batches, never mixed


def test_bucketed_stills_take_the_bucket_size_that_crops_least(folders: Path) -> None:
    ds = SFTDataset(str(folders / "stills"), **{**PARAMS, "buckets": [[9, 32, 40], [9, 48, 48]]})
    # 48x64 (aspect 1.33) is nearer 32x40 (1.25) than 48x48 (1.0)
    assert ds.shapes[int(ds.bucket_ids[0])] == (1, 32, 40)
    assert ds[0]["mp4"].shape == (1, 3, 32, 40)


def test_webdataset_image_members_are_stills(clips: dict[str, bytes], tmp_path: Path) -> None:
    import imageio.v2 as imageio

    def png(seed: int) -> bytes:
        buf = io.BytesIO()
        imageio.imwrite(buf, np.full((48, 64, 3), 10 * seed, np.uint8), format="png")
        return buf.getvalue()

    samples = {f"s{i}": {"png": png(i), "txt": f"still {i}".encode()} for i in range(3)}
    samples.update({f"v{i}": {"mp4": clips["a"], "txt": f"clip {i}".encode()} for i in range(2)})
    shard = write_shard(tmp_path / "mixed.tar", samples)
    ds = VideoDataset(str(shard), image_size=[H, W], num_frames=9, fps=8, shuffle_buffer=1, nshards=1, rank=0, world_size=1)
    items = list(ds)
    assert sorted(i["mp4"].shape[0] for i in items) == [1, 1, 1, 9, 9]
    assert {i["txt"] for i in items if i["num_frames"] == 1} == {"still 0", "still 1", "still 2"}
    loader, _ = build_loader(ds, batch_size=2, num_workers=0, rank=0, world_size=1, seed=0)
    batches = list(loader)  # finite here (nshards=1): leftovers of each shape are dropped
    assert sorted(b["mp4"].shape[1] for b in batches) == [1, 9]


# ---- train_data_weights -------------------------------------------------------------------------
class _Ints(torch.utils.data.Dataset):
    def __init__(self, n: int, tag: int) -> None:
        self.n, self.tag = n, tag

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, int]:
        return self.tag, i


def test_weighted_concat_is_sats_concat_dataset() -> None:
    sat = _sat_configure_data()
    parts, weights = [_Ints(5, 0), _Ints(3, 1), _Ints(4, 2)], [2, 3, 0]
    ours, official = WeightedConcat(parts, weights), sat.ConcatDataset(parts, weights=weights)
    assert len(ours) == len(official) == 19
    assert [ours[i] for i in range(len(ours))] == [official[i] for i in range(len(official))]


def test_weights_are_respected_by_the_bucketed_sampler(folders: Path) -> None:
    clips, stills = SFTDataset(str(folders / "clips"), **PARAMS), SFTDataset(str(folders / "stills"), **PARAMS)
    mixed = WeightedConcat([clips, stills], [3, 1])  # 12 clip indices, 6 still indices per epoch
    _, sampler = build_loader(mixed, batch_size=2, num_workers=0, rank=0, world_size=1, seed=3)
    counts: Counter = Counter()
    for _ in range(20):  # 20 epochs, each batch one shape
        for batch in sampler:
            kinds = {int(i) < 12 for i in batch}
            assert len(kinds) == 1
            counts[kinds.pop()] += 1
    assert counts == {True: 20 * 6, False: 20 * 3}  # the shares are 12:6 exactly, every epoch


def test_weights_are_checked() -> None:
    assert check_weights(None, 2) is None
    with pytest.raises(ValueError, match="one weight per dataset"):
        check_weights([1], 2)
    with pytest.raises(ValueError, match=">= 0"):
        check_weights([0, 0], 2)


def test_interleaved_streams_follow_the_probabilities() -> None:
    class Endless(torch.utils.data.IterableDataset):
        def __init__(self, tag: int) -> None:
            self.tag = tag

        def __iter__(self):
            while True:
                yield self.tag

    stream = iter(WeightedInterleave([Endless(0), Endless(1)], [1, 3], seed=5))
    draws = Counter(next(stream) for _ in range(4000))
    assert abs(draws[1] / 4000 - 0.75) < 0.03
    def first(seed: int) -> list[int]:
        return [x for x, _ in zip(WeightedInterleave([Endless(0), Endless(1)], [1, 3], seed=seed), range(50))]

    assert first(5) == first(5) != first(6)


# ---- split --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, valid, test", [("949,50,1", False, False), ("8,1,1", True, False), ("0.8", False, False), ("1000,1,1", True, True), ("3/1", False, False)])
def test_parse_split_is_sats_get_split(text: str, valid: bool, test: bool) -> None:
    sat = _sat_configure_data()
    args = argparse.Namespace(split=text, valid_data=["v"] if valid else None, test_data=["t"] if test else None)
    assert parse_split(text, valid, test) == pytest.approx(sat.get_split(args))
    assert should_split(parse_split(text, valid, test)) == sat.should_split(sat.get_split(args))


@pytest.mark.parametrize("n, block, fractions", [(37, 10, [0.8, 0.1, 0.1]), (100, 100, [0.949, 0.05, 0.001]), (25, 7, [0.5, 0.5, 0.0])])
def test_split_is_sats_blocked_split(n: int, block: int, fractions: list[float]) -> None:
    sat = _sat_configure_data()
    ours = split_dataset(_Ints(n, 0), list(fractions), block, seed=11)
    official = sat.split_ds(_Ints(n, 0), list(fractions), block_size=block, seed=11)
    for a, b in zip(ours, official):
        assert (a is None) == (b is None)
        if a is not None:
            assert len(a) == len(b) and [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]
    taken = [i for part in ours if part is not None for _, i in (part[k] for k in range(len(part)))]
    assert len(taken) == len(set(taken))  # parts never overlap


def test_split_of_a_small_dataset_names_block_size() -> None:
    with pytest.raises(ValueError, match="block_size: 5"):
        split_dataset(_Ints(5, 0), [0.8, 0.2, 0.0], 10000, seed=1)


def _run_args(folders: Path, **kw) -> argparse.Namespace:
    base = dict(
        data_config={"target": "cogvideox_sat.data.SFTDataset", "params": PARAMS},
        train_data=[str(folders / "clips"), str(folders / "stills")], train_data_weights=None, valid_data=None,
        test_data=None, split="1,0,0", block_size=10000, seed=4,
    )
    return argparse.Namespace(**{**base, **kw})


def test_training_data_split_is_deterministic_and_feeds_validation(folders: Path) -> None:
    args = _run_args(folders, split="2,1,0", block_size=3, train_data_weights=[2, 1])
    train, valid = build_training_data(args, rank=0, with_valid=True)
    again, _ = build_training_data(args, rank=0, with_valid=True)
    assert [train[i]["txt"] for i in range(len(train))] == [again[i]["txt"] for i in range(len(again))]
    train_txt = {train[i]["txt"] for i in range(len(train))}
    valid_txt = {valid[i]["txt"] for i in range(len(valid))}
    assert valid_txt and not train_txt & valid_txt
    assert len(train) == 2 * 3 + 4  # clips: 3 of 4 in train, weight 2; stills: 4 of 6, weight 1
    with pytest.raises(ValueError, match="block_size"):
        build_training_data(_run_args(folders, split="2,1,0"), rank=0, with_valid=True)


# ---- resume -------------------------------------------------------------------------------------
def test_mixed_stream_resumes_exactly(folders: Path) -> None:
    args = _run_args(folders, train_data_weights=[1, 2])
    train, _ = build_training_data(args, rank=0, with_valid=False)

    def stream():
        loader, sampler = build_loader(train, batch_size=2, num_workers=0, rank=0, world_size=1, seed=9)
        return BatchStream(loader, sampler)

    straight = stream()
    expected = [next(straight) for _ in range(14)]  # 2 epochs of 2 + 6 batches, and more
    first = stream()
    for _ in range(5):
        next(first)
    resumed = stream()
    resumed.load_state_dict(first.state_dict())
    for want in expected[5:]:
        got = next(resumed)
        assert got["txt"] == want["txt"] and torch.equal(got["mp4"], want["mp4"])
    assert {b["mp4"].shape[1] for b in expected} == {1, 9}


# ---- latent cache -------------------------------------------------------------------------------
def test_latent_cache_holds_stills_as_one_latent_frame(folders: Path, tmp_path: Path) -> None:
    tiny = TinyEncoders()
    for name in ("clips", "stills"):
        report = build_latent_cache(SFTDataset(str(folders / name), **PARAMS), str(tmp_path / "cache"), tiny.encoders(), progress=False)
        assert report.written == len(report.keys) and not report.skipped
    cached = {**PARAMS, "latent_cache": str(tmp_path / "cache")}
    stills, clips = SFTDataset(str(folders / "stills"), **cached), SFTDataset(str(folders / "clips"), **cached)
    assert stills[0]["mp4"].shape[1] == 1 and stills[0]["num_frames"] == 1  # (C', T'=1, H', W')
    assert clips[0]["mp4"].shape[1] == 3
    mixed = WeightedConcat([clips, stills], [1, 1])
    loader, _ = build_loader(mixed, batch_size=2, num_workers=0, rank=0, world_size=1, seed=0)
    assert sorted(b["mp4"].shape[2] for b in loader) == [1, 1, 1, 3, 3]


def test_shard_latent_cache_holds_stills(clips: dict[str, bytes], tmp_path: Path) -> None:
    import imageio.v2 as imageio

    from cogvideox_sat.data import build_shard_latent_cache

    buf = io.BytesIO()
    imageio.imwrite(buf, np.full((48, 64, 3), 90, np.uint8), format="png")
    shard = write_shard(tmp_path / "mixed.tar", {"s0": {"png": buf.getvalue(), "txt": b"a still"}, "v0": {"mp4": clips["a"], "txt": b"a clip"}})
    params = dict(image_size=[H, W], num_frames=9, fps=8, shuffle_buffer=1, nshards=1, rank=0, world_size=1)
    report = build_shard_latent_cache(VideoDataset(str(shard), **params), str(tmp_path / "cache"), TinyEncoders().encoders(), progress=False)
    assert report.written == 2 and not report.skipped
    items = list(VideoDataset(str(shard), latent_cache=str(tmp_path / "cache"), **params))
    assert sorted((i["txt"], i["mp4"].shape[1]) for i in items) == [("a clip", 3), ("a still", 1)]

"""Buckets: clips go to the (frames, height, width) bucket that fits them; batches are uniform."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from cogvideox_sat.data import BucketBatchedIterable, BucketBatchSampler, SFTDataset, choose_bucket, parse_buckets
from cogvideox_sat.demo.clips import make_clip

BUCKETS = [[9, 32, 40], [17, 32, 40], [17, 40, 32], [9, 40, 32]]


def test_parse_buckets_validates():
    assert parse_buckets([[49, 480, 720]]) == ((49, 480, 720),)
    with pytest.raises(ValueError, match="4k\\+1"):
        parse_buckets([[48, 480, 720]])
    with pytest.raises(ValueError, match="multiples of 8"):
        parse_buckets([[49, 481, 720]])
    with pytest.raises(ValueError, match="empty"):
        parse_buckets([])


def test_choose_bucket():
    buckets = parse_buckets([[49, 480, 720], [49, 720, 480], [49, 240, 360], [25, 480, 720], [49, 480, 480]])
    assert choose_bucket(buckets, 100, 1080, 1920) == 0  # landscape, long: largest landscape bucket
    assert choose_bucket(buckets, 100, 1920, 1080) == 1  # portrait
    assert choose_bucket(buckets, 30, 1080, 1920) == 3  # too short for 49 frames
    assert choose_bucket(buckets, 100, 300, 450) == 2  # prefers not to upscale
    assert choose_bucket(buckets, 100, 500, 500) == 4  # square
    assert choose_bucket(buckets, 10, 1080, 1920) is None


@pytest.fixture
def bucket_folder(tmp_path):
    root = tmp_path / "buckets"
    specs = {  # stem: (frames, height, width)
        "land_long_0": (17, 32, 40),
        "land_long_1": (20, 32, 40),
        "port_long_0": (17, 40, 32),
        "port_long_1": (18, 40, 32),
        "land_short_0": (9, 32, 40),
        "land_short_1": (12, 32, 40),
        "port_short_0": (10, 40, 32),
        "tiny_0": (5, 32, 40),  # shorter than every bucket
    }
    for i, (stem, (t, h, w)) in enumerate(specs.items()):
        caption = make_clip(root / "videos" / f"{stem}.mp4", num_frames=t, height=h, width=w, fps=8, seed=i)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{stem}.txt").write_text(f"{stem}: {caption}\n")
    return root


def test_sft_buckets_assign_and_shape_items(bucket_folder):
    ds = SFTDataset(str(bucket_folder), video_size=[32, 40], fps=8, max_num_frames=17, skip_frms_num=0, buckets=BUCKETS)
    assert ds.skip_counts() == {"too_short": 1}
    assert len(ds) == 7
    expected = {"land_long": (17, 32, 40), "port_long": (17, 40, 32), "land_short": (9, 32, 40), "port_short": (9, 40, 32)}
    for i in range(len(ds)):
        item = ds[i]
        kind = item["txt"].split(":")[0].rsplit("_", 1)[0]
        t, h, w = expected[kind]
        assert item["mp4"].shape == (t, 3, h, w) and item["num_frames"] == t
        assert tuple(BUCKETS[int(ds.bucket_ids[i])]) == expected[kind]


def test_bucket_batch_sampler_gives_uniform_batches(bucket_folder):
    ds = SFTDataset(str(bucket_folder), video_size=[32, 40], fps=8, max_num_frames=17, skip_frms_num=0, buckets=BUCKETS)
    sampler = BucketBatchSampler(ds.bucket_ids, batch_size=2, seed=3)
    batches = list(sampler)
    # buckets hold 2, 2, 2, 1 clips: three full batches of 2, the single one dropped
    assert len(batches) == len(sampler) == 3
    for batch in batches:
        assert len({int(ds.bucket_ids[i]) for i in batch}) == 1
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=0)
    shapes = [tuple(b["mp4"].shape) for b in loader]
    assert sorted(shapes) == sorted([(2, 17, 3, 32, 40), (2, 17, 3, 40, 32), (2, 9, 3, 32, 40)])


def test_bucket_batch_sampler_splits_ranks_and_epochs():
    ids = [0] * 10 + [1] * 7 + [2] * 5
    r0 = BucketBatchSampler(ids, 2, seed=1, rank=0, world_size=2)
    r1 = BucketBatchSampler(ids, 2, seed=1, rank=1, world_size=2)
    b0, b1 = list(r0), list(r1)
    assert len(b0) == len(b1) == 5  # 5 + 3 + 2 = 10 batches, 5 per rank
    seen = [i for b in b0 + b1 for i in b]
    assert len(seen) == len(set(seen)) == 20
    for b in b0 + b1:
        assert len({ids[i] for i in b}) == 1
    assert r0.state_dict() == {"epoch": 1, "offset": 0}  # a full pass moves to the next epoch
    epoch1 = list(r0)
    assert epoch1 != b0  # reshuffled per epoch
    # resume mid-epoch: the rest of the same batches
    r0.load_state_dict({"epoch": 1, "offset": 2})
    assert list(r0) == epoch1[2:]
    r0.set_epoch(0)
    assert list(r0) == b0
    with pytest.raises(ValueError, match="fewer batches"):
        BucketBatchSampler([0, 0, 1], 2, world_size=4)


def test_dataset_bucket_ids_of_concat(bucket_folder):
    from torch.utils.data import ConcatDataset

    from cogvideox_sat.data.buckets import dataset_bucket_ids

    ds = SFTDataset(str(bucket_folder), video_size=[32, 40], fps=8, max_num_frames=17, skip_frms_num=0, buckets=BUCKETS)
    ids = dataset_bucket_ids(ConcatDataset([ds, ds]))
    assert ids.tolist() == ds.bucket_ids.tolist() * 2
    plain = SFTDataset(str(bucket_folder), video_size=[32, 40], fps=8, max_num_frames=17, skip_frms_num=0)
    assert dataset_bucket_ids(plain) is None
    with pytest.raises(ValueError, match="bucket all or none"):
        dataset_bucket_ids(ConcatDataset([ds, plain]))


def test_bucket_batched_iterable_groups_by_shape():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            for i in range(9):
                t = 9 if i % 3 else 5
                yield {"mp4": torch.full((t, 3, 4, 4), float(i)), "txt": str(i), "num_frames": t, "fps": 8}

    batches = list(DataLoader(BucketBatchedIterable(Stream(), 2), batch_size=None))
    # items 0, 3, 6 are short: (1, 2) fill the first batch, then (0, 3), (4, 5), (7, 8); 6 is left over
    assert [tuple(b["mp4"].shape[:2]) for b in batches] == [(2, 9), (2, 5), (2, 9), (2, 9)]
    assert [b["txt"] for b in batches] == [["1", "2"], ["0", "3"], ["4", "5"], ["7", "8"]]

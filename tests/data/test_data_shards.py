"""VideoDataset over WebDataset shards: items, metadata sources, rank/worker split, bad samples, buckets."""

from __future__ import annotations

import json
import tarfile
from collections import Counter

import pytest
import torch
from datatest_helpers import decoded_indices
from torch.utils.data import DataLoader

from cogvideox_sat.data import BucketBatchedIterable, NoUsableSamples, VideoDataset
from cogvideox_sat.data.shards import assign_shards, expand_shards
from cogvideox_sat.demo.shards import write_shard
from cogvideox_sat.registry import resolve_target

PARAMS = {"image_size": [16, 24], "num_frames": 9, "fps": 8, "skip_frms_num": 0.0, "shuffle_buffer": 1}


def meta(duration, fps, **extra) -> bytes:
    return json.dumps({"duration": duration, "fps": fps, **extra}).encode()


def make_shards(folder, clips, n_shards=4, per_shard=2):
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        samples = {}
        for j in range(per_shard):
            key = f"s{s}_{j}"
            samples[key] = {"mp4": clips["a" if j % 2 == 0 else "b"], "caption": key.encode(), "json": meta(17 / 8, 8.0)}
        write_shard(folder / f"shard-{s:03d}.tar", samples)
    return folder


def texts(ds, n=None, **loader_kw):
    out = []
    for item in DataLoader(ds, batch_size=None, **loader_kw):
        out.append(item["txt"])
        if n is not None and len(out) == n:
            break
    return out


def test_items_are_official(tmp_path, clips):
    folder = make_shards(tmp_path / "shards", clips, n_shards=1)
    cls = resolve_target("data_video.VideoDataset")
    assert cls is VideoDataset
    ds = cls.create_dataset_function(str(folder / "shard-000.tar"), None, nshards=1, **PARAMS)
    items = list(ds)
    assert [it["txt"] for it in items] == ["s0_0", "s0_1"]
    for it in items:
        assert set(it) == {"mp4", "txt", "num_frames", "fps"}
        assert it["mp4"].shape == (9, 3, 16, 24) and it["mp4"].dtype == torch.float32
        assert it["num_frames"] == 9 and it["fps"] == 8
        assert -1 <= it["mp4"].min() and it["mp4"].max() <= 1


def test_random_start_at_target_fps(tmp_path, clips):
    # 40 frames at 24 fps, 9 frames at 8 fps: stride 3 from a random start in [0, 40 - 27]
    write_shard(tmp_path / "c.tar", {"x": {"mp4": clips["coded"], "caption": b"gray", "json": meta(40 / 24, 24.0)}})
    ds = VideoDataset(str(tmp_path / "c.tar"), image_size=[32, 40], num_frames=9, fps=8, nshards=30, shuffle_buffer=1, seed=5)
    starts = set()
    for item in ds:
        idx = decoded_indices(item["mp4"])
        assert [b - a for a, b in zip(idx, idx[1:])] == [3] * 8
        assert 0 <= idx[0] and idx[-1] <= 39
        starts.add(idx[0])
    assert len(starts) >= 4


def test_caption_and_meta_sources(tmp_path, clips):
    write_shard(
        tmp_path / "m.tar",
        {
            "k0": {"mp4": clips["a"], "txt": b"from txt", "json": meta(2.1, 8)},
            "k1": {"mp4": clips["a"], "json": meta(2.1, 8, caption="from json")},
            "k2": {"mp4": clips["a"], "caption": b"no metadata: probed"},
            "k3": {"mp4": clips["a"], "id": b"k3", "caption": b"from sidecar"},
        },
    )
    (tmp_path / "m.meta.jsonl").write_text(json.dumps({"key": "k3", "duration": 2.1, "fps": 8}) + "\nnot json\n")
    ds = VideoDataset(str(tmp_path / "m.tar"), nshards=1, **PARAMS)
    assert [it["txt"] for it in ds] == ["from txt", "from json", "no metadata: probed", "from sidecar"]
    assert ds.skip_counts() == {}


def test_sidecar_too_short_skips_before_decoding(tmp_path, clips):
    write_shard(tmp_path / "m.tar", {"k0": {"mp4": b"not decoded", "caption": b"x"}, "k1": {"mp4": clips["a"], "caption": b"ok"}})
    (tmp_path / "m.meta.jsonl").write_text(json.dumps({"key": "k0", "duration": 0.5, "fps": 8}) + "\n")
    ds = VideoDataset(str(tmp_path / "m.tar"), nshards=1, **PARAMS)
    assert [it["txt"] for it in ds] == ["ok"]
    assert ds.skip_counts() == {"too_short": 2}  # once at the start check, once in the stream


@pytest.mark.parametrize("n_shards, n_slots", [(8, 4), (5, 4), (3, 4), (2, 5), (1, 3), (4, 4)])
def test_assign_shards_reads_every_sample_once(n_shards, n_slots):
    per_shard = 6
    reads = Counter()
    for slot in range(n_slots):
        plan = assign_shards(n_shards, slot, n_slots)
        assert plan, "every slot gets work"
        for shard, every, offset in plan:
            reads.update((shard, n) for n in range(per_shard) if n % every == offset)
    assert reads == Counter({(s, n): 1 for s in range(n_shards) for n in range(per_shard)})


def test_ranks_and_workers_split_the_shards(tmp_path, clips):
    folder = make_shards(tmp_path / "shards", clips, n_shards=4, per_shard=2)
    assert len(expand_shards(str(folder))) == 4
    assert len(expand_shards(str(folder / "shard-{000..003}.tar"))) == 4
    seen = []
    for rank in range(2):
        # 2 ranks x 2 workers = 4 slots = 4 shards: each worker reads one shard once
        ds = VideoDataset(str(folder), rank=rank, world_size=2, nshards=1, **PARAMS)
        seen += texts(ds, num_workers=2)
    assert sorted(seen) == sorted(f"s{s}_{j}" for s in range(4) for j in range(2))


def test_stream_repeats_epochs_with_new_order(tmp_path, clips):
    folder = make_shards(tmp_path / "shards", clips, n_shards=4, per_shard=1)
    ds = VideoDataset(str(folder), nshards=8, **PARAMS)
    got = texts(ds)
    assert len(got) == 8 and sorted(got[:4]) == sorted(got[4:]) == ["s0_0", "s1_0", "s2_0", "s3_0"]


def test_bad_samples_and_broken_shards_are_skipped(tmp_path, clips):
    good = clips["a"]
    write_shard(
        tmp_path / "bad-0.tar",
        {
            "ok0": {"mp4": good, "caption": b"ok0", "json": meta(2.1, 8)},
            "zero": {"mp4": b"", "caption": b"z", "json": meta(2.1, 8)},
            "junk": {"mp4": b"\x00junk" * 300, "caption": b"j", "json": meta(2.1, 8)},
            "nocap": {"mp4": good, "json": meta(2.1, 8)},
            "novideo": {"caption": b"only text"},
            "short": {"mp4": good, "caption": b"s", "json": meta(0.4, 8)},
            "huge": {"mp4": good + bytes(30_000), "caption": b"h", "json": meta(2.1, 8)},
            "ok1": {"mp4": good, "caption": b"ok1", "json": meta(2.1, 8)},
        },
    )
    write_shard(tmp_path / "bad-1.tar", {f"t{i}": {"mp4": good, "caption": f"t{i}".encode()} for i in range(3)})
    with tarfile.open(tmp_path / "bad-1.tar") as tar:
        cut = tar.getmember("t1.mp4").offset_data + 100
    data = (tmp_path / "bad-1.tar").read_bytes()
    (tmp_path / "bad-1.tar").write_bytes(data[:cut])  # cut in the middle of t1's video
    ds = VideoDataset(
        str(tmp_path / "bad-{0..1}.tar"), max_file_mb=(len(good) + 10_000) / 2**20, nshards=2, check_on_start=False, **PARAMS
    )
    got = texts(ds)
    assert sorted(got) == ["ok0", "ok1", "t0"]
    assert ds.skip_counts() == {"empty": 1, "corrupt": 2, "captionless": 1, "missing": 1, "too_short": 1, "too_large": 1}


def test_no_usable_sample_fails_at_start(tmp_path):
    write_shard(tmp_path / "x.tar", {"a": {"mp4": b"nope" * 100, "caption": b"a"}})
    with pytest.raises(NoUsableSamples, match="corrupt=1"):
        VideoDataset(str(tmp_path / "x.tar"), **PARAMS)
    with pytest.raises(NoUsableSamples, match="missing=1"):
        VideoDataset(str(tmp_path / "none.tar"), **PARAMS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoUsableSamples, match="no shard found"):
        VideoDataset(str(tmp_path / "empty"), **PARAMS)


def test_stream_buckets(tmp_path, clips):
    folder = make_shards(tmp_path / "shards", clips, n_shards=2, per_shard=4)
    ds = VideoDataset(str(folder), buckets=[[9, 32, 40], [9, 40, 32]], nshards=2, **PARAMS)
    batches = list(DataLoader(BucketBatchedIterable(ds, 2), batch_size=None))
    # clip a is landscape (32x40), clip b portrait (40x32): 4 of each
    assert sorted(tuple(b["mp4"].shape) for b in batches) == [(2, 9, 3, 32, 40)] * 2 + [(2, 9, 3, 40, 32)] * 2

"""Latent cache of WebDataset shards: build, read back without opening the tars, resume,
windows, invalidation by params, uncached shards, rank split, and the tool on demo configs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from datatest_helpers import TinyEncoders
from torch.utils.data import DataLoader

from cogvideox_sat.data import NoUsableSamples, VideoDataset, build_shard_latent_cache
from cogvideox_sat.data import shard_cache, webdataset
from cogvideox_sat.data.shard_keys import window_rng
from cogvideox_sat.data.shards import iter_shard
from cogvideox_sat.demo.clips import make_clip
from cogvideox_sat.demo.shards import write_shard
from tests._scripts import load_script

REPO = Path(__file__).resolve().parents[2]
PARAMS = {"image_size": [16, 24], "num_frames": 9, "fps": 8, "skip_frms_num": 0.0, "shuffle_buffer": 1}


@pytest.fixture
def clip_bytes(clips) -> list[bytes]:
    """Two 17-frame clips at 8 fps: a 9-frame window can start at any of 9 frames."""
    return [clips["a"], clips["b"]]


def make_shards(folder: Path, clip_bytes, n_shards: int = 2, per_shard: int = 2, first: int = 0) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(first, first + n_shards):
        samples = {}
        for j in range(per_shard):
            name = f"s{s}_{j}"
            meta = json.dumps({"duration": 17 / 8, "fps": 8.0}).encode()
            samples[name] = {"mp4": clip_bytes[j % 2], "caption": f"caption {name}".encode(), "json": meta}
        write_shard(folder / f"shard-{s:03d}.tar", samples)
    last = first + n_shards - 1
    return f"{folder}/shard-{{{first:03d}..{last:03d}}}.tar"


def pixels(path: str, **params) -> VideoDataset:
    return VideoDataset(path, **{**PARAMS, **params, "rank": 0, "world_size": 1, "check_on_start": False})


def cached(path: str, cache_dir, **params) -> VideoDataset:
    return VideoDataset(path, **{**PARAMS, "nshards": params.pop("nshards", 2), **params, "latent_cache": str(cache_dir), "rank": 0, "world_size": 1})


def build(path, cache_dir, tiny, **kw):
    return build_shard_latent_cache(pixels(path), str(cache_dir), tiny.encoders(), progress=False, **kw)


def test_cached_items_are_the_encoded_windows_and_no_tar_is_opened(tmp_path, clip_bytes, monkeypatch):
    path = make_shards(tmp_path / "shards", clip_bytes)
    tiny = TinyEncoders()
    report = build(path, tmp_path / "cache", tiny)
    assert (report.total, report.written, report.present) == (4, 4, 0)
    # what each entry must hold: the encoders' output for the window the build drew
    expected = {}
    ds_px = pixels(path)
    for shard in ds_px.shards:
        for raw in iter_shard(shard, ds_px.max_file_bytes, None):
            item = ds_px.process(raw, window_rng(raw.name, 0))
            expected[item["txt"]] = (tiny.video(item["mp4"][None])[0], tiny.text([item["txt"]])[0], item["mp4"][0])

    def no_tar(*args, **kwargs):
        raise AssertionError("training read a tar file")

    monkeypatch.setattr(webdataset, "iter_shard", no_tar)
    monkeypatch.setattr("cogvideox_sat.data.hashing.file_digest", no_tar)  # digests come from the build's memo
    ds = cached(path, tmp_path / "cache")
    items = list(DataLoader(ds, batch_size=None))
    assert sorted(i["txt"] for i in items) == sorted(expected)
    for item in items:
        latent, text, frame0 = expected[item["txt"]]
        assert torch.equal(item["mp4"], latent) and torch.equal(item["txt_emb"], text)
        assert torch.allclose(item["first_frame"][:, 0], frame0, atol=1 / 127)  # stored as uint8
        assert item["num_frames"] == 9 and item["fps"] == 8
    assert ds.caches_first_frames()


def test_build_resumes_and_skips_complete_shards_unread(tmp_path, clip_bytes, monkeypatch):
    path = make_shards(tmp_path / "shards", clip_bytes)
    with pytest.raises(KeyboardInterrupt):
        build(path, tmp_path / "cache", TinyEncoders(fail_after=3))
    again = build(path, tmp_path / "cache", TinyEncoders())
    assert (again.written, again.present) == (1, 3)
    monkeypatch.setattr(shard_cache, "iter_shard", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-read")))
    done = build(path, tmp_path / "cache", TinyEncoders())
    assert (done.total, done.written, done.present) == (4, 0, 4)


def test_windows_are_fixed_per_build_and_picked_per_visit(tmp_path, clip_bytes):
    path = make_shards(tmp_path / "shards", clip_bytes, n_shards=1)
    report = build(path, tmp_path / "cache", TinyEncoders(), windows=3)
    assert report.written == 6
    ds = cached(path, tmp_path / "cache", nshards=1)
    samples = list(ds._read_index(0))
    assert [len(s.keys) for s in samples] == [3, 3]

    def starts_of(sample) -> set:
        raws = [raw for raw in iter_shard(ds.shards[0], ds.max_file_bytes, None) if raw.name == sample.name]
        return {tuple(pixels(path).process(raw, window_rng(raw.name, w))["mp4"].flatten()[:64].tolist()) for raw in raws for w in range(3)}

    # three draws of a start among nine can coincide for one name (1 in 81; names hold the tmp
    # path): take a sample whose windows differ (both coinciding: 1 in 6,561)
    sample, starts = max(((s, starts_of(s)) for s in samples), key=lambda pair: len(pair[1]))
    assert len(starts) > 1
    rng = random.Random(0)
    seen = {ds.load_cached(sample, rng)["mp4"].sum().item() for _ in range(40)}
    assert len(seen) == len(starts)
    # windows=3 again: nothing to do; a build with another window count rewrites the index only
    assert build(path, tmp_path / "cache", TinyEncoders(), windows=3).written == 0
    assert build(path, tmp_path / "cache", TinyEncoders(), windows=1).written == 0


def test_other_preprocessing_is_a_miss_with_the_build_command(tmp_path, clip_bytes):
    path = make_shards(tmp_path / "shards", clip_bytes)
    build(path, tmp_path / "cache", TinyEncoders())
    with pytest.raises(NoUsableSamples, match="tools/build_latent_cache.py"):
        cached(path, tmp_path / "cache", num_frames=5)
    # a build for the new params with prune drops the old entries and indexes
    report = build_shard_latent_cache(pixels(path, num_frames=5), str(tmp_path / "cache"), TinyEncoders().encoders(), progress=False, prune=True)
    assert report.written == 4
    assert len(list((tmp_path / "cache" / "entries").rglob("*.safetensors"))) == 4
    assert len(list((tmp_path / "cache" / "indexes").glob("*.json"))) == 2
    assert len(list(cached(path, tmp_path / "cache", num_frames=5))) == 4


def test_uncached_shards_are_skipped_and_counted(tmp_path, clip_bytes):
    path = make_shards(tmp_path / "shards", clip_bytes)
    build(path, tmp_path / "cache", TinyEncoders())
    make_shards(tmp_path / "shards", clip_bytes, n_shards=1, first=2)  # a shard added after the build
    ds = cached(str(tmp_path / "shards" / "shard-{000..002}.tar"), tmp_path / "cache", nshards=3)
    assert ds.skip_counts() == {"not_cached": 1}
    assert sorted(i["txt"] for i in ds) == [f"caption s{s}_{j}" for s in range(2) for j in range(2)]


def test_ranks_split_the_cached_shards(tmp_path, clip_bytes):
    path = make_shards(tmp_path / "shards", clip_bytes, n_shards=4)
    build(path, tmp_path / "cache", TinyEncoders())
    seen = []
    for rank in range(2):
        ds = VideoDataset(path, **PARAMS, nshards=2, latent_cache=str(tmp_path / "cache"), rank=rank, world_size=2)
        seen.append([i["txt"] for i in ds])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"caption s{s}_{j}" for s in range(4) for j in range(2)]


def test_build_split_over_processes_covers_every_shard_once(tmp_path, clip_bytes, monkeypatch):
    path = make_shards(tmp_path / "shards", clip_bytes, n_shards=3)
    reports = [build_shard_latent_cache(pixels(path), str(tmp_path / "cache"), TinyEncoders().encoders(), progress=False, part=(r, 2)) for r in range(2)]
    assert [r.written for r in reports] == [4, 2]  # shards 0 and 2, then shard 1
    monkeypatch.setattr("cogvideox_sat.data.hashing.file_digest", lambda p: (_ for _ in ()).throw(AssertionError("re-hashed")))
    assert sorted(i["txt"] for i in cached(path, tmp_path / "cache", nshards=3)) == [f"caption s{s}_{j}" for s in range(3) for j in range(2)]


def test_tool_builds_a_shard_cache_and_train_video_trains_on_it(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    import yaml
    from omegaconf import OmegaConf

    from cogvideox_sat.demo.tiny_t5 import make_tiny_t5
    from cogvideox_sat.registry import instantiate_from_config

    monkeypatch.chdir(tmp_path)
    # assets: a tiny T5, a VAE checkpoint (training checks the cache against these weights), 64x96 clips
    make_tiny_t5(tmp_path / "t5", d_model=32)
    model_yaml = REPO / "configs/demo/tiny_t2v.yaml"
    vae = instantiate_from_config(OmegaConf.to_container(OmegaConf.load(model_yaml).model.first_stage_config))
    torch.save({"state_dict": vae.state_dict()}, tmp_path / "vae.pt")
    for n in range(2):
        make_clip(tmp_path / f"c{n}.mp4", num_frames=17, height=64, width=96, fps=8, seed=n)
    path = make_shards(tmp_path / "shards", [(tmp_path / f"c{n}.mp4").read_bytes() for n in range(2)])
    run = yaml.safe_load((REPO / "configs/demo/sft_tiny.yaml").read_text())
    run["data"] = {"target": "data_video.VideoDataset", "params": {"image_size": [64, 96], "num_frames": 9, "fps": 8, "latent_cache": "cache"}}
    run["args"].update(train_data=[path], valid_data=None, eval_interval=None, save="runs", train_iters=2, log_interval=1, save_interval=2)
    t5 = {"is_trainable": False, "input_key": "txt", "ucg_rate": 0.1, "target": "cogvideox_sat.conditioner.FrozenT5Embedder", "params": {"model_dir": "t5", "max_length": 16}}
    run["model"] = {"latent_input": True, "conditioner_config": {"params": {"emb_models": [t5]}}, "first_stage_config": {"params": {"ckpt_path": "vae.pt"}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    base = [str(model_yaml), "run.yaml"]

    tool = load_script(REPO / "tools" / "build_latent_cache.py", "build_latent_cache", monkeypatch)
    assert tool.main(["--base", *base, "--device", "cpu", "--num-workers", "2", "--windows", "2", "--no-progress"]) == 0
    assert "8 samples: 0 already cached, 8 written" in capsys.readouterr().out  # 2 shards x 2 samples x 2 windows
    assert len(list((tmp_path / "cache" / "entries").rglob("*.safetensors"))) == 8
    assert len(list((tmp_path / "cache" / "indexes").glob("*.json"))) == 2
    item = next(iter(cached(path, tmp_path / "cache", image_size=[64, 96])))
    assert item["mp4"].shape == (4, 3, 8, 12) and item["txt_emb"].shape == (16, 32)

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "train_video.py"), "--base", *base], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "iteration 2/2" in done.stdout + done.stderr

    # --windows means nothing for folder datasets, whose frames are fixed
    (tmp_path / "folder.yaml").write_text("data:\n  target: cogvideox_sat.data.SFTDataset\n")
    assert tool.main(["--base", *base, "folder.yaml", "--cache-dir", "c2", "--device", "cpu", "--windows", "2"]) == 2
    assert "--windows" in capsys.readouterr().err

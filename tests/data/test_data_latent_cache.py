"""Latent cache: build, read back, resume, and invalidation by content, caption, params and weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from datatest_helpers import TinyEncoders

from cogvideox_sat.data import (
    LatentCache,
    NoUsableSamples,
    SFTDataset,
    StaleCacheError,
    build_latent_cache,
    check_cache_matches_model,
    model_fingerprint,
)
from cogvideox_sat.demo.clips import make_clip

PARAMS = {"video_size": [16, 24], "fps": 8, "max_num_frames": 9, "skip_frms_num": 0.0, "layout": "official"}


def build(folder, cache_dir, tiny, **params):
    ds = SFTDataset(str(folder), **{**PARAMS, **params})
    return build_latent_cache(ds, str(cache_dir), tiny.encoders(), progress=False)


def test_build_and_read_back(sft_folder, tmp_path):
    tiny = TinyEncoders()
    report = build(sft_folder, tmp_path / "cache", tiny)
    assert (report.total, report.present, report.written, report.skipped) == (4, 0, 4, {})
    pixels = SFTDataset(str(sft_folder), **PARAMS)
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **PARAMS)
    for i in range(4):
        px, item = pixels[i], cached[i]
        assert set(item) == {"mp4", "txt", "txt_emb", "first_frame", "num_frames", "fps"}
        assert item["txt"] == px["txt"] and item["num_frames"] == px["num_frames"] and item["fps"] == 8
        # latents (C', T', H', W') as the engine's latent_input path wants them
        assert item["mp4"].shape == (3, 3, 2, 3)
        assert torch.equal(item["mp4"], tiny.video(px["mp4"][None])[0])
        assert torch.equal(item["txt_emb"], tiny.text([px["txt"]])[0])
        # the clip's frame 0, exactly as the pixel path's x[:, :, 0:1] has it: (C, 1, H, W)
        assert torch.equal(item["first_frame"], px["mp4"][:1].permute(1, 0, 2, 3))


def test_build_resumes_after_interruption(sft_folder, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        build(sft_folder, tmp_path / "cache", TinyEncoders(fail_after=2))
    tiny = TinyEncoders()
    report = build(sft_folder, tmp_path / "cache", tiny)
    assert (report.present, report.written, tiny.video_calls) == (2, 2, 2)
    assert not list((tmp_path / "cache").rglob(".*.tmp")), "no half-written entry is left behind"
    again = TinyEncoders()
    assert build(sft_folder, tmp_path / "cache", again).present == 4 and again.video_calls == 0


def test_changed_file_or_caption_invalidates_only_that_entry(sft_folder, tmp_path, clip_store):
    build(sft_folder, tmp_path / "cache", TinyEncoders())
    # new content at the same path (same size and mtime would fool nobody: the memo checks both)
    make_clip(sft_folder / "videos" / "clip_0001.mp4", num_frames=9, height=32, width=40, fps=8, seed=99)
    (sft_folder / "labels" / "clip_0002.txt").write_text("a new caption\n")
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **PARAMS)
    texts = {cached[i]["txt"] for i in range(len(cached))}
    assert cached.skip_counts() == {"not_cached": 2}
    assert "a new caption" not in texts
    tiny = TinyEncoders()
    report = build(sft_folder, tmp_path / "cache", tiny)
    assert (report.present, report.written) == (2, 2)
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **PARAMS)
    assert "a new caption" in {cached[i]["txt"] for i in range(len(cached))}
    assert cached.skip_counts() == {}


def test_changed_preprocessing_invalidates_everything(sft_folder, tmp_path):
    build(sft_folder, tmp_path / "cache", TinyEncoders())
    with pytest.raises(NoUsableSamples, match="not_cached=4"):
        SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **{**PARAMS, "video_size": [16, 16]})
    with pytest.raises(NoUsableSamples, match="not_cached=4"):
        SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **{**PARAMS, "fps_sampling": "exact"})
    with pytest.raises(NoUsableSamples, match="not_cached=4"):
        SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **{**PARAMS, "resize": "bilinear"})


def test_renamed_file_keeps_its_entry(sft_folder, tmp_path):
    build(sft_folder, tmp_path / "cache", TinyEncoders())
    shutil.move(sft_folder / "videos" / "clip_0003.mp4", sft_folder / "videos" / "renamed.mp4")
    shutil.move(sft_folder / "labels" / "clip_0003.txt", sft_folder / "labels" / "renamed.txt")
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **PARAMS)
    [cached[i] for i in range(len(cached))]
    assert cached.skip_counts() == {}


def test_new_weights_supersede_the_cache_and_prune(sft_folder, tmp_path):
    build(sft_folder, tmp_path / "cache", TinyEncoders("weights-A"))
    cache = LatentCache(tmp_path / "cache")
    cache.check_fingerprint("weights-A")
    with pytest.raises(StaleCacheError, match="rebuild"):
        cache.check_fingerprint("weights-B")
    tiny = TinyEncoders("weights-B")
    report = build(sft_folder, tmp_path / "cache", tiny)
    assert report.written == 4 and tiny.video_calls == 4  # nothing reused across weights
    assert len(list((tmp_path / "cache" / "entries").rglob("*.safetensors"))) == 8
    ds = SFTDataset(str(sft_folder), **PARAMS)
    build_latent_cache(ds, str(tmp_path / "cache"), tiny.encoders(), progress=False, prune=True)
    assert len(list((tmp_path / "cache" / "entries").rglob("*.safetensors"))) == 4


def test_moments_are_sampled_per_item(sft_folder, tmp_path):
    tiny = TinyEncoders(kind="moments")
    build(sft_folder, tmp_path / "cache", tiny)
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **PARAMS)
    draws = torch.stack([cached[0]["mp4"] for _ in range(400)])
    mean = tiny.video(SFTDataset(str(sft_folder), **PARAMS)[0]["mp4"][None])[0][:3]
    assert draws.shape[1:] == (3, 3, 2, 3)
    assert not torch.equal(draws[0], draws[1])
    std = torch.exp(torch.tensor(-1.0))  # exp(logvar / 2), logvar = -2
    assert torch.allclose(draws.mean(0), mean, atol=4 * std / 20)
    assert torch.allclose(draws.std(0), torch.full_like(mean, float(std)), rtol=0.15)


def test_i2v_first_frame_is_cached(sft_folder, tmp_path):
    build(sft_folder, tmp_path / "cache", TinyEncoders(), with_image=True)
    pixels = SFTDataset(str(sft_folder), with_image=True, **PARAMS)
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), with_image=True, **PARAMS)
    assert torch.equal(cached[1]["image"], pixels[1]["image"])
    assert torch.equal(cached[1]["first_frame"], pixels[1]["mp4"][:1].permute(1, 0, 2, 3))


def test_images_txt_image_and_first_frame_are_kept_apart(sft_folder, tmp_path):
    params = {**PARAMS, "layout": "diffusers"}  # images.txt names a separate image per clip
    build(sft_folder, tmp_path / "cache", TinyEncoders(), **params)
    pixels = SFTDataset(str(sft_folder), **params)
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **params)
    px, item = pixels[2], cached[2]
    assert not torch.equal(px["image"], px["mp4"][:1])  # else this test proves nothing
    assert torch.equal(item["image"], px["image"])
    assert torch.equal(item["first_frame"], px["mp4"][:1].permute(1, 0, 2, 3))


def test_cache_without_first_frames_is_completed_by_a_build_with(sft_folder, tmp_path):
    ds = SFTDataset(str(sft_folder), **PARAMS)
    build_latent_cache(ds, str(tmp_path / "cache"), TinyEncoders().encoders(), first_frame=False, progress=False)
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **PARAMS)
    assert "first_frame" not in cached[0]
    with pytest.raises(NoUsableSamples, match="not_cached=4"):  # an `image` needs a stored frame
        SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), with_image=True, **PARAMS)
    # a T2V build reuses the entries; a build with first frames re-encodes them
    tiny = TinyEncoders()
    assert build_latent_cache(ds, str(tmp_path / "cache"), tiny.encoders(), first_frame=False, progress=False).present == 4
    report = build_latent_cache(ds, str(tmp_path / "cache"), tiny.encoders(), progress=False)
    assert (report.present, report.written, tiny.video_calls) == (0, 4, 4)
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), **PARAMS)
    assert torch.equal(cached[0]["first_frame"], ds[0]["mp4"][:1].permute(1, 0, 2, 3))


def test_format_1_cache_still_loads_without_first_frames(sft_folder, tmp_path):
    tiny = TinyEncoders()
    build(sft_folder, tmp_path / "cache", tiny)
    manifest = tmp_path / "cache" / "manifest.json"
    info = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**info, "format": 1}))
    # what version 1 wrote: `first_frame` (1, C, H, W) was the `image` item, keyed by format 1
    old = LatentCache(tmp_path / "cache")
    pixels = SFTDataset(str(sft_folder), with_image=True, **PARAMS)
    for i in range(len(pixels)):
        px, image = pixels[i], pixels[i]["image"]
        u8 = (image * 127.5 + 127.5).round().to(torch.uint8)
        tensors = {"latent": tiny.video(px["mp4"][None])[0], "txt_emb": tiny.text([px["txt"]])[0], "first_frame": u8}
        old.save(pixels.sample_key(i, old.hashes), tensors, {"caption": px["txt"], "num_frames": "9", "source": "x"})
    cached = SFTDataset(str(sft_folder), latent_cache=str(tmp_path / "cache"), with_image=True, **PARAMS)
    item = cached[1]
    assert torch.equal(item["mp4"], tiny.video(pixels[1]["mp4"][None])[0])
    assert torch.equal(item["image"], pixels[1]["image"])
    assert "first_frame" not in item  # its meaning was `image`: I2V training asks for a rebuild
    assert cached.skip_counts() == {}


def test_unknown_format_is_stale_with_the_rebuild_command(sft_folder, tmp_path):
    build(sft_folder, tmp_path / "cache", TinyEncoders())
    manifest = tmp_path / "cache" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 99}))
    with pytest.raises(StaleCacheError, match="has format 99.*tools/build_latent_cache.py"):
        LatentCache(tmp_path / "cache")


def test_model_fingerprint_follows_weights_not_paths_or_dropout(tmp_path):
    vae = tmp_path / "vae.pt"
    vae.write_bytes(b"weights one")
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "model.safetensors").write_bytes(b"t5 weights")

    def config(vae_path, t5_dir, ucg=0.1, max_length=226):
        return {
            "first_stage_config": {"target": "x.VAE", "params": {"ckpt_path": str(vae_path), "cp_size": 1}},
            "conditioner_config": {
                "target": "x.Cond",
                "params": {"emb_models": [{"ucg_rate": ucg, "input_key": "txt", "params": {"model_dir": str(t5_dir), "max_length": max_length}}]},
            },
            "network_config": {"params": {"hidden_size": 1920}},
        }

    base = model_fingerprint(config(vae, t5))
    assert model_fingerprint(config(vae, t5, ucg=0.5)) == base
    moved = tmp_path / "elsewhere.pt"
    shutil.copy(vae, moved)
    assert model_fingerprint(config(moved, t5)) == base
    assert model_fingerprint(config(vae, t5, max_length=224)) != base
    (t5 / "model.safetensors").write_bytes(b"t5 weights, fine-tuned")
    changed = model_fingerprint(config(vae, t5))
    assert changed != base
    cache = LatentCache.create(tmp_path / "cache", changed)
    check_cache_matches_model(cache, config(vae, t5))
    vae.write_bytes(b"weights two")
    with pytest.raises(StaleCacheError):
        check_cache_matches_model(cache, config(vae, t5))
    with pytest.raises(ValueError, match="random VAE"):
        model_fingerprint(config("", t5))

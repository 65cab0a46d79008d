"""Bad input never stops training: a corrupt-file corpus, decoder hangs, counters across workers."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import torch
from torch.utils.data import DataLoader

from cogvideox_sat.data import BadSample, NoUsableSamples, SFTDataset, skip_counts
from cogvideox_sat.data import clip as clip_module

PARAMS = {"video_size": [16, 24], "fps": 8, "max_num_frames": 9, "skip_frms_num": 3.0}


def expected_counts(expected: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in expected.values():
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def test_corrupt_corpus_is_skipped_with_named_warnings(corrupt_corpus, caplog):
    root, expected = corrupt_corpus
    with caplog.at_level(logging.WARNING, logger="cogvideox_sat.data"):
        ds = SFTDataset(str(root), **PARAMS)
        items = [ds[i] for i in range(len(ds))]
    # every item is a good clip, whatever index was asked for
    assert all(it["txt"] in ("caption of a_good.mp4", "caption of b_good.mp4") for it in items)
    assert all(it["mp4"].shape == (9, 3, 16, 24) for it in items)
    # each bad file was named in a warning with its reason
    for name, reason in expected.items():
        assert any(name in r.getMessage() and reason in r.getMessage() for r in caplog.records), (name, reason)
    assert ds.skip_counts() == expected_counts(expected)


def test_failed_decoders_are_freed_at_once(corrupt_corpus):
    # a failed decoder kept alive (by a reference cycle, a log record, a saved exception) is
    # freed later, possibly inside a forked DataLoader worker, where decord then crashes it
    import gc

    import decord

    root, _ = corrupt_corpus
    gc.collect()
    gc.disable()  # only reference counting: what is not freed at once shows up below
    try:
        ds = SFTDataset(str(root), **PARAMS)
        [ds[i] for i in range(len(ds))]
        alive = [o for o in gc.get_objects() if type(o) is decord.VideoReader]
    finally:
        gc.enable()
    assert ds.skip_counts().get("undecodable") == 1 and ds.skip_counts().get("corrupt") == 3
    assert alive == []


def test_bad_files_cost_one_attempt_each(corrupt_corpus):
    root, expected = corrupt_corpus
    ds = SFTDataset(str(root), **PARAMS)
    for _ in range(3):
        for i in range(len(ds)):
            ds[i]
    # a file found bad is remembered: counts do not grow with epochs
    assert ds.skip_counts() == expected_counts(expected)


def test_too_large_files_and_frames(corrupt_corpus):
    root, expected = corrupt_corpus
    good = (root / "videos" / "a_good.mp4").read_bytes()
    (root / "videos" / "k_huge.mp4").write_bytes(good + bytes(20_000))
    (root / "labels" / "k_huge.txt").write_text("huge\n")
    ds = SFTDataset(str(root), max_file_mb=(len(good) + 10_000) / 2**20, **PARAMS)
    assert ds.skip_counts()["too_large"] == 1  # screened at start, before any decoding
    assert all(ds[i]["txt"] != "huge" for i in range(len(ds)))
    assert ds.skip_counts() == {**expected_counts(expected), "too_large": 1}
    with pytest.raises(NoUsableSamples, match="too_large=3"):
        SFTDataset(str(root), max_frame_side=16, **PARAMS)  # every clip's 32x40 frames are over the limit


def test_no_usable_sample_fails_at_start_with_reasons(corrupt_corpus):
    root, expected = corrupt_corpus
    for name in ("a_good.mp4", "b_good.mp4"):
        (root / "videos" / name).write_bytes(b"\x00" * 100)
    with pytest.raises(NoUsableSamples) as err:
        SFTDataset(str(root), **PARAMS)
    message = str(err.value)
    assert str(root) in message and "10 videos found" in message
    assert "captionless=2" in message and "too_short=1" in message


def test_empty_folder_fails_at_start(tmp_path):
    with pytest.raises(NoUsableSamples, match="0 videos found"):
        SFTDataset(str(tmp_path), **PARAMS)


def test_allow_empty_caption_keeps_captionless_clips(corrupt_corpus):
    root, expected = corrupt_corpus
    ds = SFTDataset(str(root), allow_empty_caption=True, **PARAMS)
    texts = {ds[i]["txt"] for i in range(len(ds))}
    assert "" in texts  # the official behaviour: train on an empty caption
    assert "captionless" not in ds.skip_counts()


def test_decoder_hang_times_out(sft_folder, monkeypatch):
    real_open = clip_module.open_video
    release = threading.Event()

    def hanging_open(source, name):
        if str(source).endswith("clip_0001.mp4"):
            release.wait(10)  # "hangs" until the test ends, then gives up without decoding
            raise BadSample("corrupt", name, "released")
        return real_open(source, name)

    monkeypatch.setattr(clip_module, "open_video", hanging_open)
    ds = SFTDataset(str(sft_folder), layout="official", decode_timeout_s=0.3, **PARAMS)
    start = time.monotonic()
    try:
        item = ds[1]
        assert time.monotonic() - start < 2.5, "the loader must not wait for the hung decoder"
    finally:
        release.set()  # let the abandoned thread finish (a decoding thread must not outlive the test)
    assert item["txt"] == (sft_folder / "labels" / "clip_0002.txt").read_text().strip()
    assert ds.skip_counts() == {"timeout": 1}


def test_skip_counts_reach_the_training_process_from_workers(corrupt_corpus):
    root, expected = corrupt_corpus
    ds = SFTDataset(str(root), **PARAMS)
    before = ds.skip_counts()
    # make a good clip go bad after start: only the workers can find out
    (root / "videos" / "b_good.mp4").write_bytes(b"garbage" * 100)
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(len(b["txt"]) for b in batches) == len(ds)
    assert all(t == "caption of a_good.mp4" for b in batches for t in b["txt"])
    after = ds.skip_counts()
    assert after.get("corrupt", 0) > before.get("corrupt", 0), (before, after)
    assert skip_counts().get("corrupt", 0) >= after["corrupt"]
    assert isinstance(batches[0]["mp4"], torch.Tensor) and batches[0]["mp4"].shape == (2, 9, 3, 16, 24)

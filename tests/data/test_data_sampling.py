"""Frame index rules, checked against values worked out by hand from the official code."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cogvideox_sat.data.sampling import (
    available_frames,
    exact_sft_indices,
    nearest_smaller_4k_plus_1,
    official_sft_indices,
    official_webdataset_indices,
)


def test_nearest_smaller_4k_plus_1():
    assert [nearest_smaller_4k_plus_1(n) for n in range(1, 14)] == [1, 1, 1, 1, 5, 5, 5, 5, 9, 9, 9, 9, 13]


@pytest.mark.parametrize(
    "vlen, src_fps, expected, num_frames",
    [
        # A: 200 frames at 24 fps -> end = int(3 + 49/8*24) = 150, stride 147 // 49 = 3
        (200, 24.0, list(range(3, 150, 3)), 49),
        # A at 30 fps: end = int(3 + 183.75) = 186, stride 183 // 49 = 3 (10 fps, kept as official)
        (300, 30.0, list(range(3, 150, 3)), 49),
        # A below the target fps (official: stride 0 crashed): 30 consecutive frames, padded later
        (100, 5.0, list(range(3, 33)), 49),
        # B: 60 frames at 30 fps: stride max(54 // 49, 1) = 1, the first 49 of 3..56
        (60, 30.0, list(range(3, 52)), 49),
        # B: 120 frames at 60 fps: stride 114 // 49 = 2
        (120, 60.0, list(range(3, 101, 2)), 49),
        # C: 30 frames -> 24 usable -> 21 consecutive
        (30, 8.0, list(range(3, 24)), 21),
        # C: 9 frames, 3 usable -> 1
        (9, 8.0, [3], 1),
    ],
)
def test_official_sft_indices(vlen, src_fps, expected, num_frames):
    indices, n = official_sft_indices(vlen, src_fps, 8, 49, 3.0)
    assert indices.tolist() == expected and n == num_frames


def test_official_sft_indices_never_leave_the_clip():
    for vlen in range(1, 400, 7):
        for src_fps in (5.0, 8.0, 23.976, 24.0, 25.0, 30.0, 60.0):
            indices, n = official_sft_indices(vlen, src_fps, 8, 49, 3)
            assert len(indices) <= 49
            if len(indices):
                assert indices.min() >= 3 and indices.max() < vlen
                assert np.all(np.diff(indices) > 0)
            else:
                assert vlen - 6 < 1 and n == 0  # too short: nothing left after skipping


def test_exact_sft_indices():
    indices, n = exact_sft_indices(300, 30.0, 8, 49, 3)
    assert n == 49 and indices.tolist() == [3 + int(k * 3.75) for k in range(49)]
    # short: 40 frames at 24 fps, skip 3 -> 34 usable -> 12 frames at 8 fps -> 9 (4k+1)
    assert available_frames(40, 24.0, 8, 3) == 12
    indices, n = exact_sft_indices(40, 24.0, 8, 49, 3)
    assert n == 9 and indices.tolist() == list(range(3, 30, 3))
    assert exact_sft_indices(6, 24.0, 8, 49, 3)[1] == 0


def test_official_webdataset_indices():
    rng = random.Random(0)
    starts = set()
    for _ in range(200):
        # 10 s at 30 fps, 49 frames at 8 fps span 183.75 source frames
        idx = official_webdataset_indices(300, 10.0, 30.0, 8, 49, 3, rng)
        assert len(idx) == 49 and idx[0] >= 3 and idx[-1] < 300
        steps = np.diff(idx)
        assert set(steps.tolist()) <= {3, 4}  # 3.75 on average: the exact target fps
        starts.add(int(idx[0]))
    assert len(starts) > 20 and max(starts) <= int(299 - 3 - 183.75) + 1
    # too short for the span
    assert len(official_webdataset_indices(100, 100 / 30, 30.0, 8, 49, 3, rng)) == 0

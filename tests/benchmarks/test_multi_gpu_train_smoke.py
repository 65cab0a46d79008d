"""benchmarks/multi_gpu_train.py --tiny on the CPU: `dp` (2 gloo processes against 1 process
accumulating 2 micro-batches, the same global batch) and `resume` (a 2-process checkpoint resumed
on 1 process through the universal layout), each a real torchrun launch of train_video.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.benchmarks import load_benchmark

pytestmark = pytest.mark.slow  # ~80 s on 2 cores: four launches


def test_dp_and_resume_on_another_count(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_benchmark("multi_gpu_train", monkeypatch=monkeypatch)
    one, many = module.main(["dp", "--tiny", "--work", str(tmp_path)])
    assert (one.processes, one.accumulation, many.processes, many.accumulation) == (1, 2, 2, 1)
    assert one.global_batch == many.global_batch == 2
    assert sorted(many.losses) == [1, 2, 3] and sorted(one.losses) == [1, 2]
    assert all(math.isfinite(v) and v > 0 for r in (one, many) for v in r.losses.values())
    # same weights, same global batch: the first losses agree in expectation, not step by step
    assert abs(one.losses[1] - many.losses[1]) < 0.2 * many.losses[1]
    out = capsys.readouterr().out
    assert "| 2 GPUs x micro 1 | 2 |" in out and "efficiency" in out

    straight, resumed = module.main(["resume", "--tiny", "--work", str(tmp_path)])
    assert "written by 2 processes, resuming on 1" in resumed.output
    assert "(no_load_rng or another process count: random streams reseeded)" in resumed.output
    assert (resumed.run_dir / "universal" / "2" / ".complete").is_file()
    assert sorted(resumed.losses) == [1, 2, 3] and resumed.losses[1] == straight.losses[1]
    assert 0 < resumed.losses[3] < 2 * straight.losses[3]  # trains on from the restored state
    assert "(universal copy made: True)" in capsys.readouterr().out
    assert (tmp_path / "t5-32").is_dir() and len(list(tmp_path.glob("clips-*"))) == 1  # assets made once

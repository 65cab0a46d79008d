"""`--resume` of multi-process runs through the real launcher (torchrun + train_video.py, gloo, CPU
demo model, ZeRO-2 LoRA fine-tune of a base loaded with `load`): 2 processes, 4 steps straight ==
2 steps, resume, 2 more (every loss equal; each rank gets its own random stream back, not rank 0's,
and the frozen base is loaded again).

Another process count through the real launcher is benchmarks/multi_gpu_train.py's `resume` mode
(tests/benchmarks/test_multi_gpu_train_smoke.py); exact equality across counts is the subject of
test_resume_other_process_count.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.train_runs import demo_overlay, losses, make_demo_assets, random_base_run, run_dir_of, train_command

sys.path.insert(0, str(REPO / "benchmarks"))
from multi_gpu_train import rewind  # noqa: E402  (one copy: the benchmark's resume mode uses it too)

pytestmark = pytest.mark.slow  # ~40 s on 2 cores: two 2-process launches

N, SAVE_AT = 4, 2


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_assets(tmp_path_factory.mktemp("assets"))


def overlay(assets: Path, save: Path, **args) -> dict:
    cfg = demo_overlay(assets, save, **{"train_iters": N, "save_interval": SAVE_AT, "lr_decay_style": "constant", "warmup": 0.0, **args})
    cfg["deepspeed"] = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}}
    return cfg


def launch(tmp: Path, processes: int, extra: dict, *flags: str) -> str:
    cmd, env = train_command(tmp, "tiny_t2v_lora.yaml", extra, *flags, processes=processes)
    proc = subprocess.run(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def test_multi_process_resume_on_the_same_count(assets: Path, tmp_path: Path) -> None:
    base = {"mode": "finetune", "load": str(random_base_run(tmp_path / "base"))}  # the frozen base the LoRA runs load

    straight = tmp_path / "straight"
    launch(tmp_path, 2, overlay(assets, straight, **base))
    run = run_dir_of(straight)
    expected = losses(run)
    assert sorted(expected) == list(range(1, N + 1))

    # same count: exact
    again = rewind(run, tmp_path / "again" / run.name, SAVE_AT)
    out = launch(tmp_path, 2, overlay(assets, again.parent, **base), "--resume", str(again))
    assert f"resumed from {again} at iteration {SAVE_AT}\n" in out
    assert losses(again) == expected

"""`--resume` of multi-process runs through the real launcher (torchrun + train_video.py, gloo, CPU
demo model, ZeRO-2 LoRA fine-tune of a base loaded with `load`):

- same process count: 2 processes, 4 steps straight == 2 steps, resume, 2 more (every loss equal;
  each rank gets its own random stream back, not rank 0's, and the frozen base is loaded again);
- another count: the 2-process checkpoint resumes on 1 process (micro-batch 2, the same global
  batch) through a universal copy made once, and training goes on.
Exact equality across counts is the subject of test_resume_other_process_count.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.train_runs import demo_overlay, losses, make_demo_assets, run_dir_of, train_command

sys.path.insert(0, str(REPO / "benchmarks"))
from multi_gpu_train import rewind  # noqa: E402  (one copy: the benchmark's resume mode uses it too)

pytestmark = pytest.mark.slow  # ~1 min on 2 cores: four launches

N, SAVE_AT = 4, 2


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_assets(tmp_path_factory.mktemp("assets"))


def overlay(assets: Path, save: Path, micro: int = 1, **args) -> dict:
    cfg = demo_overlay(assets, save, **{"train_iters": N, "save_interval": SAVE_AT, "lr_decay_style": "constant", "warmup": 0.0, **args})
    cfg["deepspeed"] = {"train_micro_batch_size_per_gpu": micro, "zero_optimization": {"stage": 2}}
    return cfg


def launch(tmp: Path, processes: int, extra: dict, *flags: str, model: str = "tiny_t2v_lora.yaml") -> str:
    cmd, env = train_command(tmp, model, extra, *flags, processes=processes)
    proc = subprocess.run(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def test_multi_process_resume_same_and_other_count(assets: Path, tmp_path: Path) -> None:
    # a base model (one step of the full tiny model) that the LoRA runs load
    launch(tmp_path, 1, overlay(assets, tmp_path / "base", train_iters=1, save_interval=1), model="tiny_t2v.yaml")
    base = {"mode": "finetune", "load": str(run_dir_of(tmp_path / "base"))}

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

    # another count: 1 process x micro-batch 2 goes on from the 2-process checkpoint
    other = rewind(run, tmp_path / "other" / run.name, SAVE_AT)
    out = launch(tmp_path, 1, overlay(assets, other.parent, micro=2, train_iters=SAVE_AT + 1, **base), "--resume", str(other))
    assert "written by 2 processes, resuming on 1" in out
    assert f"resumed from {other} at iteration {SAVE_AT} (no_load_rng or another process count: random streams reseeded)" in out
    assert (other / "universal" / str(SAVE_AT) / ".complete").is_file()
    resumed = losses(other)
    assert sorted(resumed) == list(range(1, SAVE_AT + 2)) and all(resumed[i] == expected[i] for i in range(1, SAVE_AT + 1))
    assert 0 < resumed[SAVE_AT + 1] < 2 * max(expected.values())  # trains on from the restored state
    assert (other / str(SAVE_AT + 1) / "mp_rank_00_model_states.pt").is_file()

"""Faults through the real launcher (train_video.py on the CPU demo model, LoRA, ZeRO-1, fp32,
FusedEmaAdam), each compared with one uninterrupted run (the module's `straight` fixture):

- SIGKILL mid-run: `latest` names the last complete checkpoint and `--resume` reproduces every
  later loss and the final EMA bit for bit (so the shadow and its step count were restored);
- SIGTERM to the whole process group (as SLURM sends it; the data-loader worker gets it too) at a
  random step: the run saves that step, exits with 75, and `--resume` reproduces every later loss;
- the newest checkpoint cut short: `--resume` names the file, falls back to the one before and
  reproduces every later loss;
- SIGUSR1 to one of two torchrun (gloo) workers: both save the same step, no hang, the resume
  goes on from it;
- an error inside the loop (its loader workers ignoring the stop signals): the process still ends.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from cogvideox_sat.training.metrics import read_metrics
from cogvideox_sat.training.preemption import EXIT_SAVED_ON_SIGNAL
from tests.train_runs import EMA_OPTIMIZER, demo_overlay, losses, make_demo_assets, run_dir_of, train_command

pytestmark = pytest.mark.slow

N = 10
# a short EMA horizon, so the shadow differs from the weights
OPTIMIZER = {**EMA_OPTIMIZER, "params": {**EMA_OPTIMIZER["params"], "ema_decay": 0.7}}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_assets(tmp_path_factory.mktemp("assets"))


def overlay(assets: Path, save: Path, **args) -> dict:
    cfg = demo_overlay(assets, save, **{"train_iters": N, "save_interval": 4, "num_workers": 1, **args})
    cfg["deepspeed"] = {"optimizer": OPTIMIZER}
    return cfg


def launch(tmp: Path, extra: dict, *flags: str, processes: int = 1) -> subprocess.Popen:
    cmd, env = train_command(tmp, "tiny_t2v_lora.yaml", extra, *flags, processes=processes)
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, code: int = 0) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == code, out[-4000:]
    return out


def wait_for_step(proc: subprocess.Popen, save: Path, step: int) -> Path:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runs = [p for p in save.iterdir() if p.is_dir()] if save.exists() else []
        if runs and (runs[0] / "metrics.jsonl").is_file() and max(losses(runs[0]) or [0]) >= step:
            return runs[0]
        assert proc.poll() is None, "training ended before the signal"
        time.sleep(0.01)
    raise TimeoutError(f"step {step} not reached")


@pytest.fixture(scope="module")
def straight(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("straight")
    finish(launch(tmp, overlay(assets, tmp / "save")))
    run = run_dir_of(tmp / "save")
    assert sorted(losses(run)) == list(range(1, N + 1))
    return run


def _module(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["module"]


def _ema(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    states = torch.load(path, map_location="cpu", weights_only=False)
    return states["module"], states["ema"]["num_updates"]


def test_uninterrupted_run_saves_the_ema_beside_the_weights(straight: Path) -> None:
    assert (straight / "latest").read_text().strip() == str(N)  # `latest` names the weights, not the EMA
    weights = _module(straight / str(N) / "mp_rank_00_model_states.pt")
    ema, updates = _ema(straight / f"{N}-ema" / "mp_rank_00_model_states.pt")
    assert set(ema) == set(weights) and updates == N
    assert any(not torch.equal(ema[k].float(), weights[k].float()) for k in weights if ".matrix_" in k)
    records = read_metrics(straight)
    assert records[-1]["ema_updates"] == N and {"iteration", "loss", "lr", "step_s"} <= set(records[0])


def test_sigkill_and_resume_reproduce_every_loss_and_the_ema(assets: Path, straight: Path, tmp_path: Path) -> None:
    proc = launch(tmp_path, overlay(assets, tmp_path / "save"))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill once a checkpoint exists and a step after it ran
        runs = [p for p in (tmp_path / "save").iterdir() if p.is_dir()] if (tmp_path / "save").exists() else []
        if runs and (runs[0] / "latest").is_file() and max(losses(runs[0]) or [0]) > int((runs[0] / "latest").read_text()):
            break
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run = run_dir_of(tmp_path / "save")
    saved = int((run / "latest").read_text())
    assert saved in (4, 8) and max(losses(run)) < N, "the killed run must not have finished"

    out = finish(launch(tmp_path, overlay(assets, tmp_path / "save"), "--resume", str(run)))
    assert f"resumed from {run} at iteration {saved}" in out
    assert losses(run) == losses(straight)  # bit-exact: same data, noise, LR and optimizer state
    ema, updates = _ema(run / f"{N}-ema" / "mp_rank_00_model_states.pt")
    expected, expected_updates = _ema(straight / f"{N}-ema" / "mp_rank_00_model_states.pt")
    assert updates == expected_updates == N
    for key, value in expected.items():
        assert torch.equal(ema[key], value), key


def test_sigterm_saves_that_step_and_resume_is_exact(assets: Path, straight: Path, tmp_path: Path) -> None:
    at = random.Random().randint(1, N - 3)
    proc = launch(tmp_path, overlay(assets, tmp_path / "save"))
    run = wait_for_step(proc, tmp_path / "save", at)
    os.killpg(proc.pid, signal.SIGTERM)  # the launcher and its data-loader worker, as a scheduler does
    out = finish(proc, EXIT_SAVED_ON_SIGNAL)
    saved = int((run / "latest").read_text())
    assert at <= saved < N, (at, saved)
    assert f"SIGTERM received: checkpoint {run / str(saved)} holds iteration {saved}; exiting with code 75" in out
    assert max(losses(run)) == saved

    out = finish(launch(tmp_path, overlay(assets, tmp_path / "save"), "--resume", str(run)))
    assert f"resumed from {run} at iteration {saved}" in out
    assert losses(run) == losses(straight), f"signal after step {at}"  # bit-equal


def test_truncated_newest_checkpoint_falls_back_exactly(assets: Path, straight: Path, tmp_path: Path) -> None:
    run = tmp_path / straight.name
    shutil.copytree(straight, run)
    shutil.rmtree(run / str(N))  # keep 4 and 8; `latest` names 8
    (run / "latest").write_text("8")
    states = run / "8" / "mp_rank_00_model_states.pt"
    states.write_bytes(states.read_bytes()[: states.stat().st_size // 2])

    out = finish(launch(tmp_path, overlay(assets, tmp_path), "--resume", str(run)))
    assert f"checkpoint {run / '8'} is damaged: mp_rank_00_model_states.pt has" in out
    assert f"falling back to checkpoint {run / '4'}" in out and f"resumed from {run} at iteration 4" in out
    assert losses(run) == losses(straight)


def _workers(launcher: int) -> list[int]:
    """Pids of the torchrun agent's children (the workers)."""
    import psutil

    return sorted(p.pid for p in psutil.Process(launcher).children() if "train_video.py" in " ".join(p.cmdline()))


def test_signal_to_one_of_two_gloo_workers_saves_both(assets: Path, tmp_path: Path) -> None:
    # exactness of a signal's checkpoint is test_sigterm_saves_that_step_and_resume_is_exact's, and
    # of a 2-process resume tests/parallel/test_torchrun_resume.py's: here, that both ranks save
    cfg = overlay(assets, tmp_path / "save", train_iters=6, save_interval=100, num_workers=0)
    cfg["deepspeed"] = {"zero_optimization": {"stage": 2}}
    proc = launch(tmp_path, cfg, processes=2)
    run = wait_for_step(proc, tmp_path / "save", 2)
    workers = _workers(proc.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGUSR1)  # one rank only: both must save, neither may hang
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-4000:]  # torchrun reports its workers' exit code 75 as a failure
    assert "exitcode  : 75" in out or "exit code 75" in out or "exitcode: 75" in out, out[-4000:]
    saved = int((run / "latest").read_text())
    assert f"SIGUSR1 received: checkpoint {run / str(saved)}" in out and 2 <= saved < 6

    before = losses(run)
    out = finish(launch(tmp_path, cfg, "--resume", str(run), processes=2))
    assert f"resumed from {run} at iteration {saved}" in out
    after = losses(run)
    assert sorted(after) == list(range(1, 7)) and all(after[i] == before[i] for i in range(1, saved + 1))


# installed as sitecustomize: validation's writer raises, as a missing video codec or a full
# disk would, inside the training loop
_FAILING_VALIDATION = '''
import importlib.abc, importlib.util, sys

class FailingValidation(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "cogvideox_sat.training.validation":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            def write_samples(*args, **kwargs):
                raise RuntimeError("injected validation failure")
            module.write_samples = write_samples

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, FailingValidation())
'''


def test_an_error_in_the_loop_ends_the_process(assets: Path, tmp_path: Path) -> None:
    """Loader workers ignore the stop signals; the error's traceback keeps them alive until the
    interpreter exits, whose SIGTERM they ignore: the run must still end, with the error."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_FAILING_VALIDATION)
    cfg = overlay(assets, tmp_path / "save", train_iters=2, save_interval=100, num_workers=2, eval_interval=2, eval_iters=1,
                  eval_batch_size=1, valid_data=[str(assets / "data")])
    cmd, env = train_command(tmp_path, "tiny_t2v_lora.yaml", cfg)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "hook"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "injected validation failure" in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]

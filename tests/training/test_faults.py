"""Faults a long run meets, at unit size: manifests sealed and checked, fallback to the newest intact
checkpoint, pruning that keeps it, a full disk, the signal watch, non-finite losses, the verify tool.

Checkpoints are written through `save_checkpoint` with a stand-in for DeepSpeed that writes the tag
folder with torch.save (as DeepSpeed's checkpoint engine does); the real DeepSpeed path runs in
test_faults_runs.py and in the ENOSPC case with two gloo processes below.
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cogvideox_sat.arguments import RunArgs
from cogvideox_sat.training import disk_space
from cogvideox_sat.training.checkpoint import choose_resume_tag, prune_old, read_latest, save_checkpoint, tag_folders
from cogvideox_sat.training.disk_space import DiskFullError
from cogvideox_sat.training.loop import LoopConfig, LoopState, NonFiniteLossError, train_step
from cogvideox_sat.training.manifest import MANIFEST, check_tag, seal
from cogvideox_sat.training.preemption import SignalWatch
from tests.conftest import REPO
from tests.training.test_training_units import FakeDeepSpeed, FakeEngine

STATES = "mp_rank_00_model_states.pt"


class FakeZeroDeepSpeed(FakeDeepSpeed):
    """Also writes an optimizer partition, as ZeRO does (two files per tag)."""

    def save_checkpoint(self, folder, tag, client_state, save_latest, exclude_frozen_parameters):
        super().save_checkpoint(folder, tag, client_state, save_latest, exclude_frozen_parameters)
        torch.save({"exp_avg": torch.randn(64)}, Path(folder) / tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")


def _saves(folder: Path, *iterations: int, keep_last: int | None = None) -> torch.nn.Module:
    module = torch.nn.Linear(4, 4)
    for it in iterations:
        save_checkpoint(FakeZeroDeepSpeed(module), folder, it, {"step": it}, keep_last=keep_last)
    return module


def _truncate(path: Path, keep: int = 100) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


# ---- manifests ---------------------------------------------------------------------------
def test_manifest_lists_size_and_sha256_of_every_file(tmp_path: Path) -> None:
    import hashlib

    _saves(tmp_path, 10)
    manifest = json.loads((tmp_path / "10" / MANIFEST).read_text())
    assert set(manifest["files"]) == {STATES, "zero_pp_rank_0_mp_rank_00_optim_states.pt"}
    for name, entry in manifest["files"].items():
        data = (tmp_path / "10" / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    check = check_tag(tmp_path / "10")
    assert check.intact and check.files == 2 and check.bytes == sum(e["bytes"] for e in manifest["files"].values())


def test_check_names_the_damaged_file_and_why(tmp_path: Path) -> None:
    _saves(tmp_path, 10, 20, 30, 40)
    _truncate(tmp_path / "10" / STATES)
    assert f"{STATES} has 100 bytes, the manifest says" in check_tag(tmp_path / "10").reason()

    path = tmp_path / "20" / STATES
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    assert "SHA-256 differs" in check_tag(tmp_path / "20").reason()

    (tmp_path / "30" / MANIFEST).unlink()
    assert "manifest.json is missing" in check_tag(tmp_path / "30").reason()

    (tmp_path / "40" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    (tmp_path / "40" / "stray.pt").write_bytes(b"x")
    reason = check_tag(tmp_path / "40").reason()
    assert "optim_states.pt is missing" in reason and "stray.pt is not in the manifest" in reason


# ---- resume fallback ---------------------------------------------------------------------
def test_resume_falls_back_past_damaged_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _saves(tmp_path, 10, 20, 30)
    assert choose_resume_tag(tmp_path) == "30"
    _truncate(tmp_path / "30" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (tmp_path / "20" / MANIFEST).write_text("{not json")
    assert choose_resume_tag(tmp_path) == "10"
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path / '30'} is damaged: zero_pp_rank_0_mp_rank_00_optim_states.pt has 100 bytes" in out
    assert f"checkpoint {tmp_path / '20'} is damaged: manifest.json is unreadable" in out
    assert f"falling back to checkpoint {tmp_path / '10'}" in out
    assert read_latest(tmp_path) == "10"  # so the next crash comes back here without re-checking 20 and 30


def test_resume_ignores_an_unfinished_newer_save_and_a_missing_latest(tmp_path: Path) -> None:
    _saves(tmp_path, 10)
    (tmp_path / "20").mkdir()  # a save killed before its manifest; `latest` never moved
    torch.save({}, tmp_path / "20" / STATES)
    assert choose_resume_tag(tmp_path) == "10"
    (tmp_path / "latest").unlink()
    assert choose_resume_tag(tmp_path) == "10"
    _truncate(tmp_path / "10" / STATES)
    with pytest.raises(FileNotFoundError, match="no intact checkpoint"):
        choose_resume_tag(tmp_path)


def test_run_from_before_manifests_resumes_latest_unverified(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _saves(tmp_path, 10, 20)
    for tag in ("10", "20"):
        (tmp_path / tag / MANIFEST).unlink()
    assert choose_resume_tag(tmp_path) == "20"
    assert "loaded unverified" in capsys.readouterr().out


# ---- pruning -----------------------------------------------------------------------------
def test_pruning_keeps_the_newest_intact_checkpoint(tmp_path: Path) -> None:
    _saves(tmp_path, 10, 20, 30, keep_last=2)
    assert [p.name for p in tag_folders(tmp_path)] == ["20", "30"]
    (tmp_path / "40").mkdir()  # unfinished saves do not count towards keep_last
    (tmp_path / "50").mkdir()
    assert prune_old(tmp_path, 1) == [20]
    assert [p.name for p in tag_folders(tmp_path)] == ["30", "40", "50"] and check_tag(tmp_path / "30").intact


def test_resaving_an_interrupted_iteration_replaces_its_leftovers(tmp_path: Path) -> None:
    _saves(tmp_path, 10)
    (tmp_path / "20").mkdir()
    (tmp_path / "20" / "leftover.pt").write_bytes(b"partial")
    _saves(tmp_path, 20)
    assert not (tmp_path / "20" / "leftover.pt").exists() and check_tag(tmp_path / "20").intact


# ---- full disk ---------------------------------------------------------------------------
def _fail_optimizer_write(monkeypatch: pytest.MonkeyPatch, err: Exception) -> None:
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if "optim_states" in str(f):
            Path(f).write_bytes(b"half a file")
            raise err
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_full_disk_is_one_line_and_keeps_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _saves(tmp_path, 10)
    _fail_optimizer_write(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DiskFullError) as info:
        save_checkpoint(FakeZeroDeepSpeed(module), tmp_path, 20, {})
    msg = str(info.value)
    size = check_tag(tmp_path / "10").bytes
    assert "\n" not in msg and f"no space left in {tmp_path} " in msg
    assert f"needs about {size} bytes" in msg and "bytes free" in msg and "`latest` still names 10" in msg
    assert not (tmp_path / "20").exists() and read_latest(tmp_path) == "10" and check_tag(tmp_path / "10").intact


def test_short_write_without_errno_counts_as_full_only_without_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _saves(tmp_path, 10)
    _fail_optimizer_write(monkeypatch, RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"))
    with pytest.raises(RuntimeError, match="unexpected pos") as info:  # plenty of space: not a full disk
        save_checkpoint(FakeZeroDeepSpeed(module), tmp_path, 20, {})
    assert not isinstance(info.value, DiskFullError)
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: 1000)
    with pytest.raises(DiskFullError, match="1000 bytes free"):
        save_checkpoint(FakeZeroDeepSpeed(module), tmp_path, 20, {})
    assert not (tmp_path / "20").exists() and read_latest(tmp_path) == "10"


def test_warns_once_when_free_space_is_below_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    module = _saves(tmp_path, 10)
    capsys.readouterr()
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: 10)
    save_checkpoint(FakeZeroDeepSpeed(module), tmp_path, 20, {})
    save_checkpoint(FakeZeroDeepSpeed(module), tmp_path, 30, {})
    out = capsys.readouterr().out
    assert out.count("warning:") == 1 and f"{tmp_path} has 10 bytes free but the last checkpoint took" in out


# ---- signals -----------------------------------------------------------------------------
def test_signal_watch_records_the_first_signal_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with SignalWatch() as watch:
        assert watch.agreed("cpu") == 0
        signal.raise_signal(signal.SIGUSR1)
        assert watch.received == signal.SIGUSR1 and watch.agreed("cpu") == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is before
    with SignalWatch(enabled=False) as off:
        assert signal.getsignal(signal.SIGUSR1) is before and off.agreed("cpu") == 0


def test_second_signal_during_a_save_kills_it_and_the_previous_checkpoint_loads(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from cogvideox_sat.training.checkpoint import save_checkpoint
        from cogvideox_sat.training.preemption import SignalWatch

        class SignalledMidSave:
            def __init__(self, module): self.module = module
            def save_checkpoint(self, folder, tag, client_state, save_latest, exclude_frozen_parameters):
                (Path(folder) / tag).mkdir(parents=True, exist_ok=True)
                torch.save({{"module": self.module.state_dict()}}, Path(folder) / tag / "mp_rank_00_model_states.pt")
                if tag == "20":
                    os.kill(os.getpid(), signal.SIGTERM)  # the scheduler's second SIGTERM, mid-save
                    print("survived the second signal", flush=True)

        folder = Path(sys.argv[1])
        module = torch.nn.Linear(2, 2)
        with SignalWatch() as watch:
            save_checkpoint(SignalledMidSave(module), folder, 10, {{}})
            os.kill(os.getpid(), signal.SIGTERM)  # the first: recorded, the run goes on to save
            assert watch.received == signal.SIGTERM
            save_checkpoint(SignalledMidSave(module), folder, 20, {{}})
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stdout + proc.stderr
    assert "survived" not in proc.stdout
    assert read_latest(tmp_path) == "10" and choose_resume_tag(tmp_path) == "10"


# ---- non-finite losses -------------------------------------------------------------------
def _cfg(max_bad: int) -> LoopConfig:
    return LoopConfig(train_iters=10, log_interval=1, save_interval=None, eval_interval=None, eval_iters=1, exit_interval=None, max_nonfinite_in_row=max_bad)


def test_non_finite_stop_names_the_first_bad_iteration() -> None:
    nan = float("nan")
    engine, state = FakeEngine([1.0, nan, nan, nan, nan]), LoopState()
    cfg = _cfg(4)
    train_step(engine, iter([{}] * 9), torch.device("cpu"), 0, state, cfg)
    with pytest.raises(NonFiniteLossError, match="4 non-finite losses in a row, the first at iteration 2"):
        for it in range(1, 5):
            try:
                train_step(engine, iter([{}] * 9), torch.device("cpu"), it, state, cfg)
            except IndexError:  # FakeEngine out of losses: the step needs another batch
                pass


def test_fp16_overflow_skips_are_counted_apart() -> None:
    engine, state = FakeEngine([1.0, 2.0]), LoopState()
    engine.was_step_applied = lambda: False  # DeepSpeed's loss scaler skipped the update
    train_step(engine, iter([{}] * 2), torch.device("cpu"), 0, state, _cfg(1))
    train_step(engine, iter([{}] * 2), torch.device("cpu"), 1, state, _cfg(1))
    assert state.skipped == {"nonfinite": 0, "fp16_overflow": 2} and state.nonfinite_in_row == 0


def test_run_args_defaults_and_validation() -> None:
    args = RunArgs()
    assert args.save_on_signal is True and args.max_nonfinite_steps == 10
    assert RunArgs(save_on_signal=False).save_on_signal is False
    with pytest.raises(ValueError, match="save_on_signal"):
        RunArgs(save_on_signal="sometimes")


# ---- the verify tool ---------------------------------------------------------------------
def test_verify_tool_lists_every_tag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    from verify_checkpoint import main

    _saves(tmp_path, 10, 20)
    ema = tmp_path / "20-ema"  # a suffixed tag, as EMA weights are saved
    ema.mkdir()
    torch.save({"module": {}}, ema / STATES)
    seal(ema)
    (tmp_path / "universal").mkdir()  # not a tag folder
    assert main([str(tmp_path)]) == 0
    _truncate(tmp_path / "10" / STATES)
    assert main([str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()[-3:]
    assert lines[0].startswith("10      damaged  mp_rank_00_model_states.pt has 100 bytes")
    assert lines[1].startswith("20      intact   2 files,") and lines[1].endswith("<- latest")
    assert lines[2].startswith("20-ema  intact   1 file,")

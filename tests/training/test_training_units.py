"""Units of the training loop: LR schedule, atomic checkpoints, keep-last, non-finite handling,
resumable data order."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cogvideox_sat.training.checkpoint import (
    NonFiniteWeightsError,
    prune_old,
    read_latest,
    save_checkpoint,
    write_latest,
)
from cogvideox_sat.training.data import BatchStream, ResumableShardSampler, build_loader
from cogvideox_sat.training.loop import LoopConfig, LoopState, NonFiniteLossError, train_step
from cogvideox_sat.training.schedule import LRSchedule, build_scheduler


# ---- LR schedule -------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["linear", "cosine", "exponential", "constant"])
def test_lr_never_negative_and_warms_up(style: str) -> None:
    sched = LRSchedule(total_iters=100, warmup_fraction=0.1, style=style, min_ratio=0.1)
    values = [sched(i) for i in range(0, 130)]
    assert min(values) >= 0.0
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a <= b + 1e-12 for a, b in zip(values[:9], values[1:10]))  # warmup rises
    if style == "linear":
        assert values[100] == 0.0 and values[129] == 0.0  # past the end: stays at zero
    if style == "cosine":
        assert values[100] == pytest.approx(0.1)


def test_lr_is_a_function_of_the_iteration_only() -> None:
    sched = LRSchedule(total_iters=50, warmup_fraction=0.0, style="linear")
    assert sched(25) == pytest.approx(0.5) and sched(0) == 1.0


def _scheduler_at(iteration: int, schedule: LRSchedule, lr: float):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(opt, schedule)
    for _ in range(iteration):
        opt.step()
        sched.step()
    return opt, sched


def test_a_resumed_schedule_is_the_checkpoints_when_the_config_is_unchanged() -> None:
    schedule = LRSchedule(total_iters=10, warmup_fraction=0.2, style="cosine")
    saved_opt, saved = _scheduler_at(4, schedule, 1e-3)
    opt, resumed = _scheduler_at(0, schedule, 1e-3)
    opt.load_state_dict(saved_opt.state_dict())  # as DeepSpeed loads them: optimizer, then scheduler
    resumed.load_state_dict(saved.state_dict())
    assert resumed.changes == [] and resumed.last_epoch == 4
    _, uninterrupted = _scheduler_at(6, schedule, 1e-3)
    for _ in range(2):
        opt.step()
        resumed.step()
    assert resumed.get_last_lr() == pytest.approx(uninterrupted.get_last_lr())


def test_a_longer_train_iters_on_resume_is_followed_and_reported() -> None:
    # torch's LambdaLR would put the checkpoint's total_iters (2) back: LR 0 for every extra step
    saved_opt, saved = _scheduler_at(2, LRSchedule(total_iters=2, warmup_fraction=0.0), 1e-3)
    longer = LRSchedule(total_iters=4, warmup_fraction=0.0)
    opt, resumed = _scheduler_at(0, longer, 2e-3)
    opt.load_state_dict(saved_opt.state_dict())
    resumed.load_state_dict(saved.state_dict())
    assert resumed.changes == ["total_iters 2 -> 4", "base LR [0.001] -> [0.002]"]
    assert resumed.last_epoch == 2 and resumed.lr_lambdas[0] is longer
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3 * longer(2))  # the next step's, from the config
    assert longer(2) == 0.5


def test_resumed_optimizer_settings_are_the_configs() -> None:
    from cogvideox_sat.training.hyperparams import group_settings, restore_settings

    def adamw(weight_decay: float, betas) -> torch.optim.AdamW:
        w, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
        return torch.optim.AdamW([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=1e-3, weight_decay=weight_decay, betas=betas)

    saved = adamw(1e-4, (0.9, 0.95)).state_dict()
    opt = adamw(0.05, [0.9, 0.95])  # the config's YAML list
    settings = group_settings(opt)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["weight_decay"] == 1e-4  # torch puts the checkpoint's back
    assert restore_settings(opt, settings) == ["param group 0: weight_decay 0.0001 -> 0.05"]  # betas equal as list and tuple
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert restore_settings(opt, settings) == []
    wrapper = SimpleNamespace(optimizer=opt)  # DeepSpeed's bf16 wrapper has no param_groups of its own
    opt.param_groups[0]["eps"] = 1.0
    assert restore_settings(wrapper, group_settings(adamw(0.05, (0.9, 0.95)))) == ["param group 0: eps 1.0 -> 1e-08"]


# ---- checkpoints -------------------------------------------------------------------------
class FakeDeepSpeed:
    """Writes the tag folder like DeepSpeed; `fail` simulates a save killed halfway."""

    def __init__(self, module: torch.nn.Module, fail: bool = False):
        self.module, self.fail = module, fail

    def save_checkpoint(self, folder, tag, client_state, save_latest, exclude_frozen_parameters):
        assert save_latest is False  # `latest` is ours to move, atomically, afterwards
        (Path(folder) / tag).mkdir(parents=True, exist_ok=True)
        if self.fail:
            raise KeyboardInterrupt("killed mid-save")
        torch.save({"module": self.module.state_dict(), **client_state}, Path(folder) / tag / "mp_rank_00_model_states.pt")


def test_save_killed_halfway_keeps_previous_latest(tmp_path: Path) -> None:
    module = torch.nn.Linear(2, 2)
    save_checkpoint(FakeDeepSpeed(module), tmp_path, 10, {})
    assert read_latest(tmp_path) == "10"
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(FakeDeepSpeed(module, fail=True), tmp_path, 20, {})
    assert read_latest(tmp_path) == "10"
    assert (tmp_path / "10" / "mp_rank_00_model_states.pt").is_file()


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    module = torch.nn.Linear(2, 2)
    save_checkpoint(FakeDeepSpeed(module), tmp_path, 1, {})
    with torch.no_grad():
        module.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="NaN/Inf"):
        save_checkpoint(FakeDeepSpeed(module), tmp_path, 2, {})
    assert read_latest(tmp_path) == "1" and not (tmp_path / "2").exists()


def test_keep_last_k(tmp_path: Path) -> None:
    module = torch.nn.Linear(2, 2)
    for it in (5, 10, 15, 20):
        save_checkpoint(FakeDeepSpeed(module), tmp_path, it, {}, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["15", "20"]
    assert read_latest(tmp_path) == "20"


def test_prune_never_removes_latest(tmp_path: Path) -> None:
    for tag in ("1", "2", "3"):
        (tmp_path / tag).mkdir()
    write_latest(tmp_path, "1")
    assert prune_old(tmp_path, 1) == [2]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["1", "3"]


# ---- non-finite losses -------------------------------------------------------------------
class FakeEngine:
    def __init__(self, losses: list[float], accumulation: int = 1):
        self.losses = list(losses)
        self.accumulation = accumulation
        self.backwards = 0
        self.steps = 0
        self.module = SimpleNamespace(shared_step=self._shared_step)

    def _shared_step(self, batch):
        return torch.tensor(self.losses.pop(0)), {}

    def gradient_accumulation_steps(self) -> int:
        return self.accumulation

    def backward(self, loss):
        self.backwards += 1

    def step(self):
        self.steps += 1


def _cfg(max_bad: int = 3) -> LoopConfig:
    return LoopConfig(train_iters=10, log_interval=1, save_interval=None, eval_interval=None, eval_iters=1, exit_interval=None, max_nonfinite_in_row=max_bad)


def test_non_finite_batch_is_skipped_without_update(capsys: pytest.CaptureFixture) -> None:
    engine, state = FakeEngine([float("nan"), 2.0]), LoopState()
    loss = train_step(engine, iter([{}] * 5), torch.device("cpu"), 0, state, _cfg())
    assert loss == 2.0 and engine.backwards == 1 and engine.steps == 1
    assert state.skipped["nonfinite"] == 1 and state.nonfinite_in_row == 0
    assert "non-finite loss" in capsys.readouterr().out


def test_too_many_non_finite_in_a_row_stops() -> None:
    engine, state = FakeEngine([float("inf")] * 3), LoopState()
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
        train_step(engine, iter([{}] * 5), torch.device("cpu"), 7, state, _cfg(3))
    assert engine.backwards == 0


def test_gradient_accumulation_averages_micro_losses() -> None:
    engine, state = FakeEngine([1.0, 3.0], accumulation=2), LoopState()
    assert train_step(engine, iter([{}] * 2), torch.device("cpu"), 0, state, _cfg()) == 2.0
    assert engine.backwards == 2


# ---- data order --------------------------------------------------------------------------
def test_shards_are_disjoint_and_cover_the_epoch() -> None:
    shards = [list(ResumableShardSampler(10, rank, 2, seed=3)) for rank in (0, 1)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(10))


def test_batch_stream_resumes_mid_epoch_and_across_epochs() -> None:
    data = list(range(7))
    loader, sampler = build_loader(data, batch_size=2, num_workers=0, rank=0, world_size=1, seed=5)
    straight = BatchStream(loader, sampler)
    expected = [next(straight).tolist() for _ in range(8)]  # crosses two epoch boundaries

    loader, sampler = build_loader(data, batch_size=2, num_workers=0, rank=0, world_size=1, seed=5)
    first = BatchStream(loader, sampler)
    got = [next(first).tolist() for _ in range(4)]
    state = first.state_dict()
    loader, sampler = build_loader(data, batch_size=2, num_workers=0, rank=0, world_size=1, seed=5)
    resumed = BatchStream(loader, sampler)
    resumed.load_state_dict(state)
    got += [next(resumed).tolist() for _ in range(4)]
    assert got == expected
    assert expected[0] != expected[3]  # shuffled per epoch


def test_creating_a_loader_iterator_does_not_touch_the_global_rng() -> None:
    loader, sampler = build_loader(list(range(4)), 2, 0, 0, 1, seed=1)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    next(iter(loader))
    assert torch.equal(before, torch.get_rng_state())


class _Bucketed(torch.utils.data.Dataset):
    """Samples of two shapes; `bucket_ids` marks which (as the bucketed SFT dataset does)."""

    def __init__(self) -> None:
        self.bucket_ids = [0, 1] * 6

    def __len__(self) -> int:
        return len(self.bucket_ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((1 + self.bucket_ids[i],), float(i))


def test_bucketed_dataset_gets_uniform_batches_and_resumes() -> None:
    loader, sampler = build_loader(_Bucketed(), batch_size=2, num_workers=0, rank=0, world_size=1, seed=2)
    assert type(sampler).__name__ == "BucketBatchSampler"
    straight = BatchStream(loader, sampler)
    expected = [next(straight).tolist() for _ in range(9)]  # 6 batches per epoch: crosses a boundary
    assert all(len({len(row) for row in batch}) == 1 for batch in expected)

    loader, sampler = build_loader(_Bucketed(), batch_size=2, num_workers=0, rank=0, world_size=1, seed=2)
    first = BatchStream(loader, sampler)
    got = [next(first).tolist() for _ in range(5)]
    loader, sampler = build_loader(_Bucketed(), batch_size=2, num_workers=0, rank=0, world_size=1, seed=2)
    resumed = BatchStream(loader, sampler)
    resumed.load_state_dict(first.state_dict())
    got += [next(resumed).tolist() for _ in range(4)]
    assert got == expected

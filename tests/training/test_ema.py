"""EMA as SAT's FusedEmaAdam keeps it: the decay schedule, config errors before anything loads, and
the EMA weights reaching sampling and the tools.

A killed-and-resumed run whose EMA equals an uninterrupted run's bit for bit (train_video.py, fp32
CPU): tests/training/test_faults_runs.py. ZeRO-1/2/3 partitioning of the shadow:
tests/parallel/test_ema_zero.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cogvideox_sat.training.ema import EmaSettings, WeightEma, adam_params
from tests.config.helpers import messages, run_with
from tests.train_runs import EMA_OPTIMIZER



def test_decay_warms_up_like_fused_ema_adam() -> None:
    s = EmaSettings(0.9999)
    assert s.decay_at(1) == 2 / 11 and s.decay_at(10) == 11 / 20
    assert s.decay_at(10**6) == 0.9999
    assert EmaSettings(0.9, warmup=False).decay_at(1) == 0.9


def test_plain_module_shadow_follows_the_recurrence_from_the_start_weights() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[1].weight.requires_grad_(False)
    ema = WeightEma(model, EmaSettings(0.9))
    expected = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert set(ema.shadow) == set(expected)  # frozen tensors get no shadow: they equal their weights
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for n in range(1, 4):
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))
        for name, p in model.named_parameters():
            if p.requires_grad:
                expected[name] = np.float32(d) * expected[name] + np.float32(1 - np.float32(d)) * p.detach()
    for name, value in expected.items():
        torch.testing.assert_close(ema.full(name), value, rtol=0, atol=1e-7)
    assert ema.num_updates == 3


def test_a_resumed_ema_keeps_its_step_count_and_reports_changed_settings(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    saved = WeightEma(model, EmaSettings(0.999))
    saved.update()
    saved.update()
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    saved.save(weights, tmp_path / "2-ema" / "mp_rank_00_model_states.pt", 2)
    same = WeightEma(model, EmaSettings(0.999))
    same.load(tmp_path / "2-ema" / "mp_rank_00_model_states.pt")
    assert same.num_updates == 2 and same.changes == []
    other = WeightEma(model, EmaSettings(0.99, warmup=False))
    other.load(tmp_path / "2-ema" / "mp_rank_00_model_states.pt")
    assert other.num_updates == 2 and other.settings.decay == 0.99  # the config's settings go on
    assert other.changes == ["ema_decay 0.999 -> 0.99", "use_num_upates True -> False"]


def test_adam_params_drop_only_the_ema_keys() -> None:
    params = {"lr": 1e-3, "ema_decay": 0.99, "use_num_upates": True, "betas": [0.9, 0.95], "adam_w_mode": True}
    assert adam_params(params) == {"lr": 1e-3, "betas": [0.9, 0.95]}


# ---- config errors, before any model loads ----------------------------------------------------
@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, "high"])
def test_ema_decay_outside_0_1_is_an_error(tmp_path: Path, decay: object) -> None:
    opt = {**EMA_OPTIMIZER, "params": {**EMA_OPTIMIZER["params"], "ema_decay": decay}}
    run = run_with(tmp_path, {"deepspeed": {"optimizer": opt}})
    (msg,) = messages(run, "deepspeed.optimizer.params.ema_decay")
    assert not run.ok and "(0, 1)" in msg and "0.9999" in msg


def test_ema_keys_on_an_optimizer_without_ema_are_an_error(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"deepspeed": {"optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "ema_decay": 0.99}}}})
    (msg,) = messages(run, "deepspeed.optimizer.params.ema_decay")
    assert not run.ok and "sat.ops.FusedEmaAdam" in msg


def test_fused_ema_adam_config_is_valid(tmp_path: Path) -> None:
    opt = {**EMA_OPTIMIZER, "params": {**EMA_OPTIMIZER["params"], "ema_decay": 0.999}}
    run = run_with(tmp_path, {"deepspeed": {"optimizer": opt}})
    assert run.ok, [p.render() for p in run.errors]


# ---- the EMA weights reach sampling and the tools ---------------------------------------------
def _fake_run(root: Path, with_ema: bool = True) -> Path:
    for tag in ("2", "2-ema") if with_ema else ("2",):
        (root / tag).mkdir(parents=True)
        torch.save({"module": {"w": torch.ones(1)}}, root / tag / "mp_rank_00_model_states.pt")
    (root / "latest").write_text("2")
    return root


def test_ema_flag_picks_the_latest_ema_folder_of_the_lora_run_else_the_base(tmp_path: Path) -> None:
    from cogvideox_sat.io.sat_checkpoint import ema_weights

    run = _fake_run(tmp_path / "run")
    assert ema_weights("base", str(run), True, verbose=False) == ("base", str(run / "2-ema"))
    assert ema_weights(str(run), None, True, verbose=False) == (str(run / "2-ema"), None)
    assert ema_weights(str(run / "2-ema"), None, True, verbose=False) == (str(run / "2-ema"), None)
    assert ema_weights(str(run), None, False) == (str(run), None)
    with pytest.raises(FileNotFoundError, match="FusedEmaAdam"):
        ema_weights(str(_fake_run(tmp_path / "plain", with_ema=False)), None, True)


def test_sampling_accepts_an_ema_folder_and_checks_the_ema_flag(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    assert run_with(tmp_path, {"args": {"load": str(run / "2-ema")}}, kind="sample").ok
    assert run_with(tmp_path, {"args": {"load": str(run), "ema": True}}, kind="sample").ok
    plain = _fake_run(tmp_path / "plain", with_ema=False)
    bad = run_with(tmp_path, {"args": {"load": str(plain), "ema": True}}, kind="sample")
    (msg,) = messages(bad, "args.ema")
    assert not bad.ok and "2-ema" in msg


def test_tools_take_the_ema_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests._scripts import load_script
    from tests.conftest import REPO

    run = _fake_run(tmp_path / "run")
    tools = {name: load_script(REPO / "tools" / f"{name}.py", name, monkeypatch) for name in ("convert_weight_sat2hf", "export_sat_lora_weight")}
    args = tools["convert_weight_sat2hf"].parse_args(["--transformer_ckpt_path", str(run), "--output_path", "x", "--ema"])
    assert args.transformer_ckpt_path == str(run / "2-ema")
    args = tools["export_sat_lora_weight"].parse_args(["--sat_pt_path", str(run), "--lora_save_directory", "x", "--ema"])
    assert args.sat_pt_path == str(run / "2-ema")

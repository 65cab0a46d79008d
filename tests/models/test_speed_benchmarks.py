"""benchmarks/vs_diffusers.py and the dit_step.py settings run (tiny, CPU): every case
produces a row, and the diffusers model it times computes our function."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from tests.benchmarks import load_benchmark
from tests.conftest import REPO

pytest.importorskip("diffusers")
pytest.importorskip("peft")


load = load_benchmark


@pytest.fixture(scope="module")
def vs_diffusers():
    return load("vs_diffusers")


def test_settings_parse_and_reject(vs_diffusers):
    dit_step = sys.modules["dit_step"]
    setting = dit_step.parse_setting("selective_mlp_out+compile+cudnn")
    assert (setting.checkpoint, setting.compile, setting.backend) == ("selective_mlp_out", True, "cudnn")
    assert setting.label == "selective_mlp_out+compile+cudnn"
    fp8 = dit_step.parse_setting("selective+compile+fa4+fp8row")
    assert (fp8.backend, fp8.fp8, fp8.label) == ("fa4", "rowwise", "selective+compile+fa4+fp8row")
    assert dit_step.parse_setting("full+fp8").fp8 == "tensorwise"
    tuned = dit_step.parse_setting("selective+autotune+fa4")
    assert (tuned.compile, tuned.compile_mode, tuned.label) == (True, "max-autotune", "selective+autotune+fa4")
    assert dit_step.parse_setting("selective+compile").compile_mode == "default"
    for bad in ("keepmore", "selective+fast"):
        with pytest.raises(Exception, match="checkpoint mode|compile"):
            dit_step.parse_setting(bad)


def test_tiny_table_times_both_and_checks_the_same_function(vs_diffusers, capsys):
    rows = vs_diffusers.main(["--tiny", "--models", "2b-lora", "5b-full", "--ours", "selective", "selective_mlp_out+compile"])
    assert [(r.model, r.impl, r.setting.split(",")[0]) for r in rows] == [
        ("2b-lora", "diffusers", "ckpt"),
        ("2b-lora", "ours", "selective"),
        ("2b-lora", "ours", "selective_mlp_out+compile"),
        ("5b-full", "diffusers", "ckpt"),
        ("5b-full", "ours", "selective"),
        ("5b-full", "ours", "selective_mlp_out+compile"),
    ]
    assert all(not r.error and r.seconds > 0 and not math.isnan(r.tflops) for r in rows)
    out = capsys.readouterr().out
    assert "time/diff" in out and "FAILED" not in out
    errors = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "max relative difference" in line]
    assert len(errors) == 2 and max(errors) < 1e-5  # 2B (sin-cos) and 5B (RoPE): same function as diffusers


def test_a_failing_case_is_reported_and_the_run_goes_on(vs_diffusers, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(vs_diffusers, "build_diffusers", broken)
    monkeypatch.setattr(vs_diffusers, "same_function_error", lambda *args: 0.0)
    rows = vs_diffusers.main(["--tiny", "--models", "2b-full", "--ours", "full"])
    assert rows[0].error.startswith("RuntimeError: CUDA out of memory") and not rows[1].error
    assert "FAILED RuntimeError" in capsys.readouterr().out


def test_cases_past_the_budget_are_listed_as_skipped(vs_diffusers, monkeypatch):
    monkeypatch.setattr(vs_diffusers, "same_function_error", lambda *args: 0.0)
    rows = vs_diffusers.main(["--tiny", "--models", "2b-full", "5b-full", "--ours", "full", "--budget-s", "0"])
    assert [(r.model, r.impl) for r in rows] == [("2b-full", "diffusers"), ("2b-full", "ours"), ("5b-full", "diffusers"), ("5b-full", "ours")]
    assert all(r.error.startswith("skipped") and math.isnan(r.seconds) for r in rows)


def test_fp8_setting_builds_float8_projections_without_touching_the_config(vs_diffusers, monkeypatch):
    pytest.importorskip("torchao.float8")
    from torchao.float8.float8_linear import Float8Linear

    from cogvideox_sat.models import dit as dit_module

    dit_step = sys.modules["dit_step"]
    monkeypatch.setattr(dit_module, "ALLOW_CPU_FOR_TESTS", True)  # FP8 runs refuse the CPU
    cfg = vs_diffusers.our_config("2b-lora", 4, True, "bf16")
    model, _ = dit_step.build_ours(cfg, dit_step.parse_setting("selective+fp8row"), "cpu", torch.bfloat16, "auto")
    swapped = [m for m in model.modules() if isinstance(m, Float8Linear)]
    assert swapped and all(m.config.cast_config_input.scaling_granularity.name == "AXISWISE" for m in swapped)  # rowwise
    assert "fp8" not in cfg["params"]["transformer_args"]  # the shared config stays bf16 for the next setting
    plain, _ = dit_step.build_ours(cfg, dit_step.parse_setting("selective"), "cpu", torch.bfloat16, "auto")
    assert not any(isinstance(m, Float8Linear) for m in plain.modules())

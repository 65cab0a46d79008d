"""benchmarks/checkpoint_auto.py (tiny, CPU): the plans it runs, and dit_step's auto<GiB> setting."""

from __future__ import annotations

import argparse
import sys

import pytest

from tests.benchmarks import load_benchmark
from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("checkpoint_auto")


def test_auto_setting_parses_its_budget(bench):
    dit_step = sys.modules["dit_step"]
    setting = dit_step.parse_setting("auto6.5+compile+cudnn")
    assert (setting.checkpoint, setting.budget_gib, setting.compile, setting.backend) == ("auto", 6.5, True, "cudnn")
    assert setting.label == "auto6.5+compile+cudnn"
    for bad in ("auto", "auto-1", "autox", "fast"):
        with pytest.raises(argparse.ArgumentTypeError, match="auto<GiB>"):
            dit_step.parse_setting(bad)


def test_tiny_run_plans_between_full_and_none(bench, capsys):
    rows = bench.main([str(REPO / "configs" / "cogvideox_2b.yaml"), "--lora-rank", "4", "--tiny", "--dtype", "fp32"])
    assert [r["setting"].split("auto")[0] for r in rows[:3]] == ["full", "selective", "none"]
    full, none, autos = rows[0], rows[2], rows[3:]
    assert [r["plan"] for r in autos] == ["1 full 1 selective", "1 selective 1 none", "2 none"]  # per-layer mixes, then all kept
    kept = [r["kept_gib"] for r in autos]
    assert full["kept_gib"] <= kept[0] < kept[1] < kept[2] == none["kept_gib"]
    assert all(r["kept_gib"] <= float(r["setting"][len("auto"):]) for r in autos)  # each plan within its budget
    assert all(r["seconds"] > 0 for r in rows)
    assert "extra meas" in capsys.readouterr().out

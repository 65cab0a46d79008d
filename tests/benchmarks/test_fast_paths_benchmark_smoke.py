"""benchmarks/fast_paths.py runs (tiny, CPU): training cases with the FP8 switches, sampling with
and without the step cache; a failing case is reported and the rest still run; the budget holds."""

from __future__ import annotations

import pytest

from cogvideox_sat.models import dit as dit_module
from tests.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("fast_paths", "fast_paths_bench")


def test_tiny_run_reports_every_case(bench, capsys, monkeypatch):
    monkeypatch.setattr(dit_module, "ALLOW_CPU_FOR_TESTS", False)  # main() sets it for --tiny; restored after
    cases = ["2b-lora/selective+compile+fa4", "5b-lora/full+compile+cudnn+store8", "2b-lora/nonsense", "2b-sample/fa4", "2b-sample/fa4+cache1000"]
    rows = bench.main(["--tiny", "--cases", *cases])
    by_case = {r.case: r for r in rows}
    assert list(by_case) == cases
    assert "nonsense" in by_case["2b-lora/nonsense"].error
    for case in ("2b-lora/selective+compile+fa4", "5b-lora/full+compile+cudnn+store8", "2b-sample/fa4", "2b-sample/fa4+cache1000"):
        assert not by_case[case].error and by_case[case].seconds > 0, (case, by_case[case].error)
    assert "skipped 2/3 steps" in by_case["2b-sample/fa4+cache1000"].note  # all but the first
    assert "Fast paths on cpu" in capsys.readouterr().out


def test_budget_skips_the_rest(bench, monkeypatch):
    monkeypatch.setattr(dit_module, "ALLOW_CPU_FOR_TESTS", False)
    rows = bench.main(["--tiny", "--budget-s", "0", "--cases", "2b-lora/full+cudnn", "2b-sample/fa4"])
    assert all(r.error.startswith("skipped") for r in rows)

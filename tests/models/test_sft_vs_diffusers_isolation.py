"""benchmarks/sft_vs_diffusers.py --isolate runs each case in a child process: a child killed by the
kernel (SIGKILL, as the host's OOM killer sends it) or one that exits without its row becomes a FAILED
row, and the next case still runs in a child of its own and reports its host-memory peak.

The parent runs here (it joins no process group when isolating); the first two children are
stand-ins that die, the third is the real --tiny case."""

from __future__ import annotations

import math
import sys

import pytest

from tests.benchmarks import load_benchmark

pytest.importorskip("diffusers")
pytest.importorskip("deepspeed")


def test_a_killed_child_is_a_failed_row_and_the_next_case_runs(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("sft_vs_diffusers", "sft_vs_diffusers_bench", monkeypatch)
    real_command = bench.child_command

    def command(argv, name, impl, setting, json_out):
        if impl == "diffusers":
            return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
        if setting.label == "full":
            return [sys.executable, "-c", "raise SystemExit(3)"]
        return real_command(argv, name, impl, setting, json_out)

    monkeypatch.setattr(bench, "child_command", command)
    for key, value in (("DS_ACCELERATOR", "cpu"), ("CUDA_VISIBLE_DEVICES", ""), ("OMP_NUM_THREADS", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MASTER_PORT", raising=False)  # each child picks a free port of its own

    rows = bench.main(["--tiny", "--isolate", "--models", "2b-full", "--ours", "full", "selective"])
    out = capfd.readouterr().out

    assert [(r.impl, r.setting) for r in rows] == [("diffusers", "ckpt, SDPA torch"), ("ours", "full"), ("ours", "selective")]
    killed, exited, measured = rows
    assert killed.error.startswith("killed (host out of memory?), host peak "), killed.error
    assert exited.error.startswith("child exited with status 3 without a row"), exited.error
    assert not measured.error, measured.error
    assert math.isfinite(measured.seconds) and measured.seconds > 0 and math.isfinite(measured.step_seconds) and measured.step_seconds > 0
    assert 0.1 < measured.host_gib < 64, measured.host_gib  # the child's own VmHWM: torch and the toy model
    # the table: both failures flagged, the measured row with its host peak and no diffusers reference
    assert "one process per case" in out
    table = out[out.rindex("-----") :].splitlines()[1:4]
    assert "FAILED killed (host out of memory?)" in table[0] and "FAILED child exited with status 3" in table[1], out[-3000:]
    cells = table[2].split()
    assert cells[:3] == ["2b-full", "ours", "selective"] and cells[6] == f"{measured.host_gib:.1f}" and cells[7] == "-", table[2]

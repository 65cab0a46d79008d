"""benchmarks/sft_vs_diffusers.py runs (--tiny: toy sizes, DeepSpeed ZeRO-2 on CPU over gloo): the
table has a row per implementation and setting with forward+backward and optimizer-step times.

A subprocess, because the benchmark joins a process group for the rest of its process's life."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("diffusers")
pytest.importorskip("deepspeed")


def table_rows(out: str) -> list[list[str]]:
    """The cells of the final table (the lines between its dashed rule and the next blank line)."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("-----")) + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    return [line.split() for line in lines[start:end]]


def test_tiny_table_times_forward_backward_and_the_step_of_both() -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / "sft_vs_diffusers.py"), "--tiny", "--models", "2b-full", "5b-full", "--ours", "selective+compile"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "DeepSpeed ZeRO-2" in proc.stdout and "FAILED" not in proc.stdout, proc.stdout[-3000:]
    rows = table_rows(proc.stdout)
    # diffusers' label is "ckpt, SDPA torch": its numbers start 3 cells later than ours
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("2b-full", "diffusers", "ckpt,"),
        ("2b-full", "ours", "selective+compile"),
        ("5b-full", "diffusers", "ckpt,"),
        ("5b-full", "ours", "selective+compile"),
    ]
    for r in rows:
        cells = r[5:] if r[1] == "diffusers" else r[3:]
        fwd_bwd, opt_step = (float(cell.split("+-")[0]) for cell in cells[:2])
        assert math.isfinite(fwd_bwd) and fwd_bwd > 0 and math.isfinite(opt_step) and opt_step > 0, r
        assert cells[3] == "-", r  # host memory is measured per child process only (--isolate)
        ratio = float(cells[4])
        assert (ratio == 1.0) if r[1] == "diffusers" else (0 < ratio < math.inf), r

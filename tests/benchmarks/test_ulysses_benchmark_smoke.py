"""The Ulysses scaling benchmark runs (--tiny: 2 gloo processes on CPU) and prints a row per degree."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_benchmark_prints_a_row_per_degree() -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "benchmarks" / "ulysses.py"), str(REPO / "configs" / "cogvideox_5b.yaml"), "--tiny"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(1, 80), (2, 40)]  # 8 text + 3 x 4 x 6 patches, halved
    assert float(rows[0][5]) == 1.0 and 0 < float(rows[1][2]) < 60

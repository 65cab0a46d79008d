"""benchmarks/vae_cp.py --tiny under torchrun (2 gloo processes): a row per cp size and op, and
the context-parallel results equal one process doing the same work."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_vae_cp_benchmark_rows_and_equality() -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "benchmarks" / "vae_cp.py"), "--tiny", "--repeat", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in proc.stdout.splitlines() if line.startswith("| 17x32x48")]
    assert [(r[1], r[2]) for r in rows] == [("1", "encode"), ("1", "decode"), ("2", "encode"), ("2", "decode")]
    assert all(float(r[3]) > 0 and r[8] == "ok" for r in rows), rows
    enc, dec = rows[2], rows[3]
    assert float(enc[6]) < 1e-4  # gathered GroupNorm statistics: the one-pass encode
    assert float(dec[6]) < 1e-4  # per-rank statistics: a decode streamed in the ranks' pieces
    assert float(dec[7]) > 1e-3  # ... which is not the one-pass decode

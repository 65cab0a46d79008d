"""benchmarks/checkpoint_save.py --tiny: the save-cost table on the CPU demo model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_checkpoint_save_tiny_prints_every_row(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "benchmarks/checkpoint_save.py"), "--tiny", "--repeats", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for row in ("model + DeepSpeed engine + one step ready", "deepspeed write only", "save, no fsync", "save (durable)", "resume check"):
        assert row in proc.stdout, proc.stdout
    assert (tmp_path / "run" / "latest").is_file()

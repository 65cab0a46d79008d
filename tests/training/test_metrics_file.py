"""metrics.jsonl after a kill: a half-written last record is left out when read and cut before a
resumed run appends, so the file never holds a merged line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cogvideox_sat.training.metrics import METRICS_FILE, MetricsLogger, read_metrics


def _torn_run(tmp_path: Path) -> Path:
    logger = MetricsLogger(tmp_path)
    for i in (1, 2):
        logger.log(i, {"loss": 1.0 / i})
    logger.close()
    with (tmp_path / METRICS_FILE).open("a") as f:
        f.write('{"iteration": 3, "lo')  # killed mid-write
    return tmp_path


def test_reading_leaves_out_a_torn_last_record(tmp_path: Path) -> None:
    run = _torn_run(tmp_path)
    assert [r["iteration"] for r in read_metrics(run)] == [1, 2]


def test_a_resumed_logger_starts_on_a_new_line(tmp_path: Path) -> None:
    run = _torn_run(tmp_path)
    logger = MetricsLogger(run)  # the resumed run (from the step-2 checkpoint) logs step 3 again
    logger.log(3, {"loss": 0.25})
    logger.close()
    assert [(r["iteration"], r["loss"]) for r in read_metrics(run)] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert (run / METRICS_FILE).read_text().count("\n") == 3


def test_a_bad_line_inside_the_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text(json.dumps({"iteration": 1, "loss": 1.0}) + "\nnot json\n")
    with pytest.raises(ValueError, match=rf"{METRICS_FILE}, line 2"):
        read_metrics(tmp_path)

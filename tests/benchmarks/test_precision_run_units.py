"""benchmarks/precision_run.py's case names and sample PSNR, and benchmarks/loss_plot.py (no runs)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cogvideox_sat.training.metrics import read_metrics, step_records
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import loss_plot  # noqa: E402
import precision_run  # noqa: E402


def test_case_names_carry_model_precision_variant_and_seed() -> None:
    assert precision_run.parse_case("5b_lora:bf16+store8") == ("5b_lora", "bf16+store8", 1)
    assert precision_run.parse_case("2b_sft:bf16+fp8row@3") == ("2b_sft", "bf16+fp8row", 3)
    with pytest.raises(SystemExit, match="expected"):
        precision_run.parse_case("7b_lora:bf16")
    with pytest.raises(SystemExit, match="expected"):
        precision_run.parse_case("2b_lora")


def test_variants_set_the_transformer_args_key(tmp_path: Path) -> None:
    args = precision_run.argparse.Namespace(tiny=True, config=REPO / "configs/demo/tiny_t2v_lora.yaml", steps=4, frames=5, size=[32, 64],
                                            checkpoint_activations="true", checkpoint_mode=None, compile=False, zero_stage=2,
                                            num_workers=0, ema_decay=0.9, sample=True, attention_backend="cudnn")
    paths = (tmp_path / "clips", tmp_path / "t5", tmp_path / "vae.pt")

    def block(precision: str) -> dict:
        cfg = precision_run.case_overlay(args, "2b_lora", precision, tmp_path, *paths)
        return cfg["model"]["network_config"]["params"]["transformer_args"]

    assert block("bf16+fp8")["fp8"] == "tensorwise" and block("bf16+fp8row")["fp8"] == "rowwise"
    assert block("bf16+store8")["fp8_base_storage"] is True and "fp8" not in block("bf16")
    # pinned in every case: `auto` would switch a resumed run to FlashAttention-4 once it is installed
    assert {block(p)["attention_backend"] for p in ("bf16", "fp16", "bf16+fp8")} == {"cudnn"}
    with pytest.raises(SystemExit, match=r"\+store8"):
        block("bf16+fp4")
    sampled = precision_run.case_overlay(args, "2b_lora", "bf16", tmp_path, *paths)["args"]
    assert (sampled["eval_interval"], sampled["eval_batch_size"], sampled["valid_data"]) == (4, 1, [str(paths[0])])


def test_sample_psnr_of_uint8_sheets(tmp_path: Path) -> None:
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 110  # mse = 100 / 192
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    expected = 10 * math.log10(255.0**2 / (100 / 192))
    assert precision_run.sample_psnr(str(tmp_path / "b.png"), str(tmp_path / "a.png")) == pytest.approx(expected)
    assert math.isnan(precision_run.sample_psnr(None, str(tmp_path / "a.png")))


def test_sample_psnr_only_between_runs_of_one_seed(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(tmp_path / "a.png")

    def outcome(case: str) -> precision_run.Outcome:
        return precision_run.Outcome(case, 4, True, 1.0, [], 0, 4, True, True, [1.0], 0.1, 1.0, str(tmp_path / "a.png"))

    bf16 = outcome("2b_lora:bf16")
    assert precision_run._sample_column(outcome("2b_lora:bf16+fp8"), bf16) == "inf"
    # another seed samples another caption with other noise: no PSNR against the first case
    assert precision_run._sample_column(outcome("2b_lora:bf16@2"), bf16) == "-"


def test_loss_plot(tmp_path: Path) -> None:
    assert loss_plot.moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert loss_plot.tail_means({"a": [9.0, 1.0, 3.0]}, 2) == {"a": 2.0}
    path = loss_plot.plot_losses({"bf16": [3.0, 2.0, 1.5], "fp8": [3.1, 2.0, 1.4]}, tmp_path / "c.png", "title")
    assert Image.open(path).size == (1000, 560)
    with pytest.raises(ValueError, match="at least one"):
        loss_plot.plot_losses({"bf16": []}, tmp_path / "d.png", "title")


def test_a_run_stopped_at_the_budget_reports_its_logged_steps(tmp_path: Path) -> None:
    import json
    import subprocess
    import time

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = time.monotonic()
    assert precision_run.wait_case("2b_sft:fp16", tmp_path, sleeper, deadline=start + 0.5) is False
    assert sleeper.returncode is not None and time.monotonic() - start < 30

    run = tmp_path / "runs" / "MyModel-1"
    run.mkdir(parents=True)
    rows = [{"iteration": i, "loss": 2.0 - 0.1 * i, "step_s": 1.25, "loss_scale": 65536.0, "overflow_skipped": 0, "ema_updates": i} for i in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcome = precision_run.read_outcome("2b_sft:fp16", tmp_path, complete=False)
    assert (outcome.steps, outcome.ema_updates, outcome.finite) == (3, 3, True)
    assert outcome.weights_finite is None and outcome.ema_finite is None and outcome.sample is None
    assert precision_run.read_outcome("2b_sft:fp16", tmp_path / "nothing", complete=False) is None

    # stopped while saving step 3: the weights file is whole, the EMA file cut short
    import torch

    (run / "3").mkdir()
    (run / "3-ema").mkdir()
    torch.save({"module": {"w": torch.ones(4, dtype=torch.float16)}}, run / "3" / "mp_rank_00_model_states.pt")
    torch.save({"module": {"w": torch.ones(4096)}}, run / "3-ema" / "mp_rank_00_model_states.pt")
    whole = (run / "3-ema" / "mp_rank_00_model_states.pt").read_bytes()
    (run / "3-ema" / "mp_rank_00_model_states.pt").write_bytes(whole[: len(whole) // 2])
    outcome = precision_run.read_outcome("2b_sft:fp16", tmp_path, complete=False)
    assert outcome.weights_finite is True and outcome.ema_finite is None
    torch.save({"module": {"w": torch.tensor([1.0, float("nan")])}}, run / "3-ema" / "mp_rank_00_model_states.pt")
    assert precision_run.read_outcome("2b_sft:fp16", tmp_path, complete=False).ema_finite is False


def test_reuse_reads_only_a_finished_run(tmp_path: Path) -> None:
    import json

    run = tmp_path / "runs" / "MyModel-1"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "loss": 1.0}) + "\n" for i in (1, 2)))
    assert not precision_run.completed_run(tmp_path, 2)  # no final checkpoint yet
    (run / "latest").write_text("2")
    assert precision_run.completed_run(tmp_path, 2) and not precision_run.completed_run(tmp_path, 3)
    assert not precision_run.completed_run(tmp_path / "missing", 2)


def test_clips_that_cannot_be_written_stop_before_anything_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the GPU machine lacks imageio-ffmpeg: the run must say how to bring clips, not fail inside imageio
    train_run = sys.modules["train_run"]
    real_find_spec = train_run.importlib.util.find_spec
    monkeypatch.setattr(train_run.importlib.util, "find_spec", lambda name: None if name == "imageio_ffmpeg" else real_find_spec(name))
    with pytest.raises(SystemExit, match="--clips DIR"):
        train_run.make_assets(REPO / "configs/demo/tiny_t2v_lora.yaml", tmp_path, None, 5, [32, 64], n_clips=1)
    assert not (tmp_path / "clips-5x32x64").exists()


def test_waiting_reports_where_each_run_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a device call cut off mid-run must still have printed how far setup and the steps got
    import json
    import subprocess

    (tmp_path / "train.log").write_text("building model\rWriting model shards: 100%\n\n")
    assert precision_run.progress_line("2b_sft:bf16", tmp_path) == "2b_sft:bf16: setting up (Writing model shards: 100%)"
    run = tmp_path / "runs" / "MyModel-1"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "loss": 2.5, "step_s": 1.26}) + "\n" + '{"iteration": 2, "lo')
    assert precision_run.progress_line("2b_sft:bf16", tmp_path) == "2b_sft:bf16: step 1, loss 2.5000, 1.26 s/step"  # step 2 being written
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "loss": 2.5 - i / 10, "step_s": 1.26}) + "\n" for i in (1, 2)))
    assert precision_run.progress_line("2b_sft:bf16", tmp_path) == "2b_sft:bf16: step 2, loss 2.3000, 1.26 s/step"

    calls = []
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    assert precision_run.wait_case("2b_sft:bf16", tmp_path, sleeper, deadline=None, progress_s=0.2, report=lambda: calls.append(1)) is True
    assert len(calls) >= 2  # reported while it ran, not only at the end
    clock = precision_run.Clock()
    clock.say("latent cache built")
    assert capsys.readouterr().out.strip().endswith("s] latent cache built")


def test_the_budget_stops_every_run_with_one_sigterm_and_time_to_save(tmp_path: Path) -> None:
    # train_video.py saves on SIGTERM and exits 75; a second signal would cut its save short
    import subprocess
    import time

    saver = tmp_path / "saver.py"
    saver.write_text(
        "import signal, sys, time\n"
        "hits = []\n"
        "signal.signal(signal.SIGTERM, lambda *a: hits.append(1))\n"
        "while not hits: time.sleep(0.01)\n"
        "time.sleep(0.3)\n"  # the save
        "sys.exit(75 if len(hits) == 1 else 1)\n"
    )
    savers = [subprocess.Popen([sys.executable, str(saver)]) for _ in range(2)]
    stuck = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
    time.sleep(1.0)  # handlers installed
    start = time.monotonic()
    precision_run.stop_runs([*savers, stuck], grace_s=2.0)
    assert [p.returncode for p in savers] == [75, 75]
    assert stuck.returncode == -9 and time.monotonic() - start < 10  # killed after the grace period


def test_steps_logged_again_after_a_resume_count_once(tmp_path: Path) -> None:
    import json

    run = tmp_path / "runs" / "MyModel-1"
    run.mkdir(parents=True)
    rows = [(1, 2.0), (2, 1.9), (3, 1.8), (2, 1.7), (3, 1.6), (4, 1.5)]  # saved at 1, killed after 3, resumed from 1
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "loss": v}) + "\n" for i, v in rows))
    assert [(r["iteration"], r["loss"]) for r in step_records(read_metrics(run))] == [(1, 2.0), (2, 1.7), (3, 1.6), (4, 1.5)]
    assert precision_run.resumable_run(tmp_path) is None  # no checkpoint: started again
    (run / "latest").write_text("1")
    assert precision_run.resumable_run(tmp_path) == run and not precision_run.completed_run(tmp_path, 4)
    (run / "latest").write_text("4")
    assert precision_run.completed_run(tmp_path, 4)


def test_a_finished_case_keeps_its_model_states_and_loses_its_optimizer_states(tmp_path: Path) -> None:
    tag = tmp_path / "runs" / "run-1" / "300"
    tag.mkdir(parents=True)
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        (tag / name).write_bytes(b"x")
    (tmp_path / "runs" / "run-1" / "latest").write_text("300")
    precision_run.drop_optimizer_states(tmp_path)
    assert sorted(p.name for p in tag.iterdir()) == ["mp_rank_00_model_states.pt"]
    assert precision_run.completed_run(tmp_path, 300)

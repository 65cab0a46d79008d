"""transformer_args.fp8 / fp8_base_storage are refused, naming the key, where they cannot act:
on the CPU, outside bf16 (fp8), for full fine-tuning (fp8_base_storage)."""

from pathlib import Path

import torch

from tests.config.helpers import messages, run_with

KEY = "model.network_config.params.transformer_args"


def with_args(**transformer_args):
    return {"model": {"network_config": {"params": {"transformer_args": transformer_args}}}}


def test_fp8_keys_are_refused_on_the_cpu(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = run_with(tmp_path, with_args(fp8=True), model="tiny_t2v_lora.yaml")
    assert any("needs a CUDA GPU" in m and "remove fp8 for CPU runs" in m for m in messages(run, f"{KEY}.fp8")) and not run.ok
    run = run_with(tmp_path, with_args(fp8_base_storage=True), model="tiny_t2v_lora.yaml", kind="sample")
    (msg,) = messages(run, f"{KEY}.fp8_base_storage")
    assert "needs a CUDA GPU" in msg and not run.ok


def test_fp8_needs_bf16_and_storage_needs_lora(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    run = run_with(tmp_path, {**with_args(fp8="rowwise"), "args": {"bf16": False, "device": 0}})
    assert any("official-parity path" in m for m in messages(run, f"{KEY}.fp8")) and not run.ok
    run = run_with(tmp_path, {**with_args(fp8_base_storage=True), "args": {"device": 0}})
    assert any("full fine-tuning" in m and "lora_config" in m for m in messages(run, f"{KEY}.fp8_base_storage")) and not run.ok
    run = run_with(tmp_path, {**with_args(fp8_base_storage=True), "args": {"device": 0}}, model="tiny_t2v_lora.yaml")
    assert not messages(run, f"{KEY}.fp8_base_storage"), messages(run, f"{KEY}.fp8_base_storage")

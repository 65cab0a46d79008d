"""One test per validation rule: a config broken in one way is rejected with a message that says
what to change; the unbroken demo config passes."""

from pathlib import Path

import pytest

from tests.config.helpers import make_checkpoint_dir, messages, run_with


def only_errors(run):
    return [p.render() for p in run.errors]


def test_demo_configs_are_valid(tmp_path: Path) -> None:
    for model in ("tiny_t2v.yaml", "tiny_t2v_lora.yaml", "tiny_i2v.yaml"):
        assert run_with(tmp_path, model=model).ok, only_errors(run_with(tmp_path, model=model))
        assert run_with(tmp_path, kind="sample", model=model).ok


# ---- frames ----------------------------------------------------------------------------
def test_vae_needs_4k_plus_1_frames(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"data": {"params": {"max_num_frames": 11}}})
    (msg,) = messages(run, "data.params.max_num_frames")
    assert "4k+1" in msg and "use 9 or 13" in msg and not run.ok


def test_training_needs_8n_plus_1_frames(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"data": {"params": {"max_num_frames": 13}}, "model": {"network_config": {"params": {"num_frames": 13}}}})
    (msg,) = messages(run, "data.params.max_num_frames")
    assert "8N+1" in msg and "use 9 or 17" in msg and "train_frame_rule" in msg


def test_8n_plus_1_rule_can_be_opted_out(tmp_path: Path) -> None:
    overlay = {"data": {"params": {"max_num_frames": 13}}, "model": {"network_config": {"params": {"num_frames": 13}}}}
    overlay["args"] = {"train_frame_rule": "4k+1"}
    run = run_with(tmp_path, overlay)
    assert run.ok, only_errors(run)


def test_temporal_patch_2_needs_even_latent_frames_for_training(tmp_path: Path) -> None:
    overlay = {"model": {"network_config": {"params": {"patch_size": [2, 2, 2]}}}}
    run = run_with(tmp_path, overlay)
    (msg,) = messages(run, "data.params.max_num_frames")
    assert "3 latent frames" in msg and "pad_latent_frames" in msg
    overlay["model"]["pad_latent_frames"] = True
    assert run_with(tmp_path, overlay).ok


def test_temporal_patch_2_needs_even_latent_frames_for_sampling(tmp_path: Path) -> None:
    overlay = {"model": {"network_config": {"params": {"patch_size": [2, 2, 2]}}}, "args": {"sampling_num_frames": 3}}
    run = run_with(tmp_path, overlay, kind="sample")
    (msg,) = messages(run, "args.sampling_num_frames")
    assert "not divisible by the temporal patch size 2" in msg and "use 4" in msg


# ---- sizes -------------------------------------------------------------------------------
def test_image_size_multiple_of_16(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"data": {"params": {"video_size": [60, 96]}}})
    (msg,) = messages(run, "data.params.video_size")
    assert "multiples of 16" in msg and "[48, 96]" in msg
    run = run_with(tmp_path, {"args": {"sampling_image_size": [64, 100]}}, kind="sample")
    (msg,) = messages(run, "args.sampling_image_size")
    assert "multiples of 16" in msg


def test_fixed_position_table_limits_frames_and_size(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"sampling_num_frames": 5, "sampling_image_size": [128, 96]}}, kind="sample")
    assert any("exceed the position table" in m for m in messages(run, "args.sampling_num_frames"))
    assert any("larger than the position table" in m for m in messages(run, "args.sampling_image_size"))


# ---- precision ---------------------------------------------------------------------------
def test_fp16_and_bf16_not_both(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"deepspeed": {"fp16": {"enabled": True}, "bf16": {"enabled": True}}})
    assert any("fp16 and bf16 are both enabled" in m for m in only_errors(run))


def test_args_precision_must_match_deepspeed(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"bf16": True}})
    (msg,) = messages(run, "args.bf16")
    assert "disagrees with deepspeed.bf16.enabled=False" in msg


def test_fp16_refused_for_rope_models(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"deepspeed": {"fp16": {"enabled": True}}}, model="tiny_i2v.yaml")
    assert any("only supported for the 2B architecture" in m and "bf16" in m for m in messages(run, "deepspeed.fp16.enabled"))
    # the 2B family may use fp16 (on a GPU)
    assert not [m for m in messages(run_with(tmp_path, {"deepspeed": {"fp16": {"enabled": True}}}), "deepspeed.fp16.enabled") if "2B" in m]


def test_fp16_training_needs_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = run_with(tmp_path, {"deepspeed": {"fp16": {"enabled": True}}})
    assert any("cannot train in fp16 on a CPU" in m for m in messages(run, "deepspeed.fp16.enabled"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not messages(run_with(tmp_path, {"deepspeed": {"fp16": {"enabled": True}}}), "deepspeed.fp16.enabled")


def test_fp16_refused_for_rope_models_when_sampling(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"fp16": True}}, kind="sample", model="tiny_i2v.yaml")
    assert any("only supported for the 2B" in m for m in messages(run, "args.fp16"))


# ---- LoRA --------------------------------------------------------------------------------
LORA = "model.network_config.params.modules.lora_config.params"


def _lora(params):
    return {"model": {"network_config": {"params": {"modules": {"lora_config": {"params": params}}}}}}


def test_lora_rank_must_be_positive(tmp_path: Path) -> None:
    run = run_with(tmp_path, _lora({"r": 0}), model="tiny_t2v_lora.yaml")
    (msg,) = messages(run, f"{LORA}.r")
    assert "positive" in msg


def test_lora_targets_must_exist(tmp_path: Path) -> None:
    run = run_with(tmp_path, _lora({"target_modules": ["attention.query_key_value", "attention.qkv"]}), model="tiny_t2v_lora.yaml")
    (msg,) = messages(run, f"{LORA}.target_modules")
    assert "'attention.qkv'" in msg and "attention.dense" in msg


def test_lora_layer_range_within_model(tmp_path: Path) -> None:
    run = run_with(tmp_path, _lora({"layer_range": [0, 5]}), model="tiny_t2v_lora.yaml")
    (msg,) = messages(run, f"{LORA}.layer_range")
    assert "[5]" in msg and "0..1" in msg


# ---- I2V ---------------------------------------------------------------------------------
def test_i2v_channels_need_image_input(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"model": {"noised_image_input": False}}, model="tiny_i2v.yaml")
    assert any("needs the image latent" in m for m in messages(run, "model.noised_image_input"))
    run = run_with(tmp_path, {"model": {"noised_image_input": True}})
    assert any("in_channels = 2 x out_channels" in m for m in messages(run, "model.network_config.params.in_channels"))


# ---- iterations and batches --------------------------------------------------------------
def test_train_iters_and_epochs_exclusive(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"epochs": 2}})
    (msg,) = messages(run, "args.epochs")
    assert "both train_iters and epochs" in msg


def test_deepspeed_train_batch_size_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    run = run_with(tmp_path, {"deepspeed": {"train_batch_size": 6, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1}})
    (msg,) = messages(run, "deepspeed.train_batch_size")
    assert "= 8" in msg
    assert run_with(tmp_path, {"deepspeed": {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2}}).ok


def test_args_batch_size_must_match_deepspeed(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"batch_size": 4}})
    (msg,) = messages(run, "args.batch_size")
    assert "train_micro_batch_size_per_gpu=1" in msg


def test_zero_stage_must_match(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"zero_stage": 2}})
    (msg,) = messages(run, "args.zero_stage")
    assert "zero_optimization.stage=1" in msg


def test_top_level_loss_scale_keys_only_warn(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"deepspeed": {"loss_scale": 0, "hysteresis": 2}})
    assert run.ok
    assert any("ignores this key at the top level" in p.render() for p in run.warnings)


# ---- paths -------------------------------------------------------------------------------
def test_missing_paths_are_named(tmp_path: Path) -> None:
    overlay = {
        "args": {"train_data": [str(tmp_path / "no_data")], "load": str(tmp_path / "no_ckpt")},
        "model": {"first_stage_config": {"params": {"ckpt_path": str(tmp_path / "no_vae.pt")}}},
    }
    run = run_with(tmp_path, overlay)
    assert any("no_data' does not exist" in m for m in messages(run, "args.train_data"))
    assert any("no_ckpt' does not exist" in m for m in messages(run, "args.load"))
    assert any("no_vae.pt' does not exist" in m for m in messages(run, "model.first_stage_config.params.ckpt_path"))


def test_shard_patterns_are_expanded_before_checking(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"shard-{i:03d}.tar").write_bytes(b"")
    run = run_with(tmp_path, {"args": {"train_data": [str(tmp_path / "shard-{000..001}.tar")]}})
    assert not messages(run, "args.train_data")
    run = run_with(tmp_path, {"args": {"train_data": [str(tmp_path / "shard-{000..002}.tar")]}})
    (msg,) = messages(run, "args.train_data")
    assert "3 shard(s), 1 missing" in msg and "shard-002.tar" in msg


def test_t5_dir_must_exist(tmp_path: Path) -> None:
    block = {"target": "cogvideox_sat.conditioner.FrozenT5Embedder", "params": {"model_dir": str(tmp_path / "t5-missing")}}
    run = run_with(tmp_path, {"model": {"conditioner_config": {"params": {"emb_models": [block]}}}})
    assert any("t5-missing' does not exist" in m for m in messages(run, "model.conditioner_config.params.emb_models.0.params.model_dir"))


def test_load_dir_needs_latest_and_states(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt_no_latest"
    folder.mkdir()
    run = run_with(tmp_path, {"args": {"load": str(folder)}}, kind="sample")
    assert any("has no `latest`" in m for m in messages(run, "args.load"))
    (folder / "latest").write_text("7")
    run = run_with(tmp_path, {"args": {"load": str(folder)}}, kind="sample")
    assert any("says '7'" in m for m in messages(run, "args.load"))
    make_checkpoint_dir(folder, "7")
    assert run_with(tmp_path, {"args": {"load": str(folder)}}, kind="sample").ok


def test_sampling_needs_weights_and_prompts(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"load": None, "input_file": str(tmp_path / "none.txt")}}, kind="sample")
    assert any("no checkpoint to sample from" in m for m in messages(run, "args.load"))
    assert any("none.txt' does not exist" in m for m in messages(run, "args.input_file"))


def test_training_needs_data(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"train_data": None}})
    assert any("no training data" in m for m in messages(run, "args.train_data"))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    overlay = {"args": {"epochs": 3, "batch_size": 9}, "data": {"params": {"max_num_frames": 10, "video_size": [30, 30]}}}
    run = run_with(tmp_path, overlay)
    keys = {p.key for p in run.errors}
    assert {"args.epochs", "args.batch_size", "data.params.max_num_frames", "data.params.video_size"} <= keys


def test_transformer_args_are_checked(tmp_path: Path) -> None:
    key = "model.network_config.params.transformer_args"
    run = run_with(tmp_path, {"model": {"network_config": {"params": {"transformer_args": {"checkpoint_activation": True}}}}})
    (msg,) = messages(run, f"{key}.checkpoint_activation")
    assert "checkpoint_activations" in msg
    run = run_with(tmp_path, {"model": {"network_config": {"params": {"transformer_args": {"checkpoint_mode": "partial"}}}}})
    assert any("selective" in m for m in messages(run, key))


def test_resume_and_lora_load_folders_are_checked(tmp_path: Path) -> None:
    run = run_with(tmp_path, {"args": {"resume": str(tmp_path / "gone")}})
    assert any("gone' does not exist" in m for m in messages(run, "args.resume"))
    empty = tmp_path / "empty_run"
    empty.mkdir()
    run = run_with(tmp_path, {"args": {"lora_load": str(empty)}}, kind="sample")
    assert any("has no `latest`" in m for m in messages(run, "args.lora_load"))


def test_sequence_parallel_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_with(tmp_path, {"args": {"sequence_parallel": True}})
    assert any("model_parallel_size >= 2" in m for m in messages(run, "args.sequence_parallel"))
    monkeypatch.setenv("WORLD_SIZE", "6")
    run = run_with(tmp_path, {"args": {"sequence_parallel": True, "model_parallel_size": 3}})  # tiny model: 2 heads
    assert any("does not divide num_attention_heads 2" in m for m in messages(run, "args.model_parallel_size"))
    monkeypatch.setenv("WORLD_SIZE", "3")
    run = run_with(tmp_path, {"args": {"sequence_parallel": True, "model_parallel_size": 2}})
    assert any("does not divide the 3 processes" in m for m in messages(run, "args.model_parallel_size"))
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert run_with(tmp_path, {"args": {"sequence_parallel": True, "model_parallel_size": 2}}).ok


def test_zero3_checkpoint_folders_are_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "zero3_run"
    (folder / "4").mkdir(parents=True)
    (folder / "latest").write_text("4")
    (folder / "4" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"")
    assert not messages(run_with(tmp_path, {"args": {"resume": str(folder)}}), "args.resume")

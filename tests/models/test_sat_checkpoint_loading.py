"""Loading checkpoints in the released SAT layout (`latest` + `<iter>/mp_rank_00_model_states.pt`)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cogvideox_sat.io import CheckpointMismatchError, load_sat_checkpoint, resolve_checkpoint_file
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import inputs, network_config, randomize_

PREFIX = "model.diffusion_model."


def save_sat(folder, state: dict, iteration: int = 1, extra: dict | None = None):
    """Write `state` as SAT/DeepSpeed would: prefixed keys in `module` plus other sub-models'
    keys, and client state with RNG states (numpy's holds an array) and DeepSpeed metadata."""
    module = {PREFIX + k: v for k, v in state.items()}
    module.update(extra or {})
    (folder / str(iteration)).mkdir(parents=True)
    client = {
        "iteration": iteration,
        "np_rng_state": np.random.get_state(),
        "random_rng_state": random.getstate(),
        "torch_rng_state": torch.get_rng_state(),
        "ds_config": {"train_micro_batch_size_per_gpu": 1},
        "ds_version": "0.15.3",
    }
    torch.save({"module": module, **client}, folder / str(iteration) / "mp_rank_00_model_states.pt")
    (folder / "latest").write_text(f"{iteration}\n")
    return folder


@pytest.fixture
def source():
    return randomize_(instantiate_from_config(network_config("5b")), seed=11).eval()


def test_strict_load_of_prefixed_checkpoint_ignores_other_submodels(tmp_path, source):
    extra = {"first_stage_model.decoder.conv.weight": torch.zeros(1), "conditioner.embedders.0.x": torch.zeros(1)}
    save_sat(tmp_path, source.state_dict(), extra=extra)
    model = instantiate_from_config(network_config("5b")).eval()
    report = load_sat_checkpoint(model, tmp_path)
    assert report.ok and report.loaded == len(source.state_dict())
    assert report.ignored == {"first_stage_model.": 1, "conditioner.": 1}
    kwargs = inputs("5b")
    with torch.no_grad():
        assert torch.equal(model(**kwargs), source(**kwargs))


def test_missing_unexpected_and_misshaped_keys_fail_strict_and_are_reported_lenient(tmp_path, source):
    state = source.state_dict()
    removed = "mixins.final_layer.linear.bias"
    del state[removed]
    state["transformer.layers.0.attention.extra.weight"] = torch.zeros(2)
    state["time_embed.0.bias"] = torch.zeros(3)
    save_sat(tmp_path, state)
    model = instantiate_from_config(network_config("5b"))
    before = model.state_dict()["transformer.layers.0.attention.dense.weight"].clone()
    with pytest.raises(CheckpointMismatchError) as err:
        load_sat_checkpoint(model, tmp_path)
    message = str(err.value)
    assert removed in message and "attention.extra.weight" in message and "time_embed.0.bias" in message
    assert torch.equal(model.state_dict()["transformer.layers.0.attention.dense.weight"], before)  # untouched

    report = load_sat_checkpoint(model, tmp_path, strict=False)
    assert report.missing == [removed]
    assert report.unexpected == ["transformer.layers.0.attention.extra.weight"]
    assert [k for k, _, _ in report.mismatched] == ["time_embed.0.bias"]
    assert torch.equal(model.state_dict()["transformer.layers.0.attention.dense.weight"], source.state_dict()["transformer.layers.0.attention.dense.weight"])


def test_conv2d_patch_embedding_layout_is_reshaped(tmp_path, source):
    # Released 1.0 checkpoints: proj was nn.Conv2d(C, hidden, 2, stride 2) -> weight [hidden, C, 2, 2].
    state = source.state_dict()
    linear = state["mixins.patch_embed.proj.weight"]
    state["mixins.patch_embed.proj.weight"] = linear.reshape(linear.shape[0], 4, 2, 2).clone()
    save_sat(tmp_path, state)
    model = instantiate_from_config(network_config("5b")).eval()
    report = load_sat_checkpoint(model, tmp_path)
    assert report.ok and any("conv patch embedding" in why for _, _, why in report.remapped)
    assert torch.equal(model.state_dict()["mixins.patch_embed.proj.weight"], linear)

    # and the conv semantics are the linear's: a real Conv2d with that weight embeds the same
    x = inputs("5b")["x"][:, 0]  # (B, C, H, W) one frame
    conv = torch.nn.Conv2d(4, linear.shape[0], 2, stride=2)
    with torch.no_grad():
        conv.weight.copy_(state["mixins.patch_embed.proj.weight"])
        conv.bias.copy_(state["mixins.patch_embed.proj.bias"])
        by_conv = conv(x).flatten(2).transpose(1, 2)
        by_linear = model.mixins["patch_embed"].proj(
            x.reshape(2, 4, 4, 2, 6, 2).permute(0, 2, 4, 1, 3, 5).reshape(2, 24, 16)
        )
    torch.testing.assert_close(by_conv, by_linear)


def test_base_checkpoint_into_lora_model(tmp_path, source):
    save_sat(tmp_path, source.state_dict())
    model = instantiate_from_config(network_config("5b", lora={"r": 4})).eval()
    report = load_sat_checkpoint(model, tmp_path)
    assert report.ok
    assert ("transformer.layers.1.attention.dense.weight", "transformer.layers.1.attention.dense.original.weight", "base weight into LoRA") in report.remapped
    assert "transformer.layers.0.attention.query_key_value.matrix_A.2" in report.kept
    kwargs = inputs("5b")
    with torch.no_grad():
        assert torch.equal(model(**kwargs), source(**kwargs))


def test_lora_checkpoint_roundtrip_and_into_plain_model_fails(tmp_path):
    lora = randomize_(instantiate_from_config(network_config("5b", lora={"r": 4})), seed=2)
    save_sat(tmp_path, lora.state_dict())
    again = instantiate_from_config(network_config("5b", lora={"r": 4}))
    assert load_sat_checkpoint(again, tmp_path).ok and not load_sat_checkpoint(again, tmp_path).kept
    plain = instantiate_from_config(network_config("5b"))
    with pytest.raises(CheckpointMismatchError, match="LoRA tensors"):
        load_sat_checkpoint(plain, tmp_path)


def test_checkpoint_file_resolution(tmp_path, source):
    save_sat(tmp_path, source.state_dict(), iteration=1000)
    path = tmp_path / "1000" / "mp_rank_00_model_states.pt"
    assert resolve_checkpoint_file(tmp_path) == path
    assert resolve_checkpoint_file(tmp_path, iteration=1000) == path
    assert resolve_checkpoint_file(path) == path
    with pytest.raises(FileNotFoundError, match="1000"):
        resolve_checkpoint_file(tmp_path, iteration=5)
    (tmp_path / "latest").unlink()
    with pytest.raises(FileNotFoundError, match="latest"):
        resolve_checkpoint_file(tmp_path)


def test_wrong_prefix_reports_everything_missing(tmp_path, source):
    save_sat(tmp_path, source.state_dict())
    model = instantiate_from_config(network_config("5b"))
    report = load_sat_checkpoint(model, tmp_path, prefix="model.", strict=False)
    assert report.loaded == 0 and len(report.unexpected) == len(source.state_dict())


def test_pickled_objects_need_explicit_trust(tmp_path, source):
    import argparse
    import pickle

    save_sat(tmp_path, source.state_dict())
    path = tmp_path / "1" / "mp_rank_00_model_states.pt"
    states = torch.load(path, weights_only=False)
    states["args"] = argparse.Namespace(lr=1e-4)  # arbitrary pickled object
    torch.save(states, path)
    model = instantiate_from_config(network_config("5b"))
    with pytest.raises(pickle.UnpicklingError):
        load_sat_checkpoint(model, tmp_path)
    assert load_sat_checkpoint(model, tmp_path, weights_only=False).ok


def test_checkpoint_of_only_trained_tensors_loads_over_base_weights(tmp_path, source):
    from cogvideox_sat.models.lora import lora_parameter_names

    trained = randomize_(instantiate_from_config(network_config("5b", lora={"r": 4})), seed=9)
    names = lora_parameter_names(trained)
    save_sat(tmp_path / "base", source.state_dict())
    save_sat(tmp_path / "lora", {k: v for k, v in trained.state_dict().items() if k in names})
    model = instantiate_from_config(network_config("5b", lora={"r": 4}))
    load_sat_checkpoint(model, tmp_path / "base")
    with pytest.raises(CheckpointMismatchError):
        load_sat_checkpoint(model, tmp_path / "lora")  # without `required`, base keys count as missing
    report = load_sat_checkpoint(model, tmp_path / "lora", required=names)
    assert report.ok and report.loaded == len(names) == 8 * 2
    state = model.state_dict()
    assert torch.equal(state[names[0]], trained.state_dict()[names[0]])
    assert torch.equal(state["time_embed.0.weight"], source.state_dict()["time_embed.0.weight"])
    with pytest.raises(CheckpointMismatchError):
        load_sat_checkpoint(model, tmp_path / "lora", required=[*names, "time_embed.0.weight"])

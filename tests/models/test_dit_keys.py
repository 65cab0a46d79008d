"""State-dict keys are an API: exact official names per variant, and the official configs build."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cogvideox_sat.models import DiffusionTransformer
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import HIDDEN, LAYERS, TEXT_LENGTH, network_config

PER_LAYER = [
    "transformer.layers.{i}.input_layernorm.weight",
    "transformer.layers.{i}.input_layernorm.bias",
    "transformer.layers.{i}.attention.query_key_value.weight",
    "transformer.layers.{i}.attention.query_key_value.bias",
    "transformer.layers.{i}.attention.dense.weight",
    "transformer.layers.{i}.attention.dense.bias",
    "transformer.layers.{i}.post_attention_layernorm.weight",
    "transformer.layers.{i}.post_attention_layernorm.bias",
    "transformer.layers.{i}.mlp.dense_h_to_4h.weight",
    "transformer.layers.{i}.mlp.dense_h_to_4h.bias",
    "transformer.layers.{i}.mlp.dense_4h_to_h.weight",
    "transformer.layers.{i}.mlp.dense_4h_to_h.bias",
    "mixins.adaln_layer.adaLN_modulations.{i}.1.weight",
    "mixins.adaln_layer.adaLN_modulations.{i}.1.bias",
    "mixins.adaln_layer.query_layernorm_list.{i}.weight",
    "mixins.adaln_layer.query_layernorm_list.{i}.bias",
    "mixins.adaln_layer.key_layernorm_list.{i}.weight",
    "mixins.adaln_layer.key_layernorm_list.{i}.bias",
]
COMMON = [
    "time_embed.0.weight",
    "time_embed.0.bias",
    "time_embed.2.weight",
    "time_embed.2.bias",
    "transformer.final_layernorm.weight",
    "transformer.final_layernorm.bias",
    "mixins.patch_embed.proj.weight",
    "mixins.patch_embed.proj.bias",
    "mixins.patch_embed.text_proj.weight",
    "mixins.patch_embed.text_proj.bias",
    "mixins.final_layer.norm_final.weight",
    "mixins.final_layer.norm_final.bias",
    "mixins.final_layer.linear.weight",
    "mixins.final_layer.linear.bias",
    "mixins.final_layer.adaLN_modulation.1.weight",
    "mixins.final_layer.adaLN_modulation.1.bias",
]
VARIANT_KEYS = {
    "2b": ["mixins.pos_embed.pos_embedding"],
    "5b": ["transformer.position_embeddings.weight"],
    "5b_i2v": ["transformer.position_embeddings.weight", "mixins.pos_embed.pos_embedding"],
    "1.5": ["transformer.position_embeddings.weight"],
    "1.5_i2v": ["transformer.position_embeddings.weight", "ofs_embed.0.weight", "ofs_embed.0.bias", "ofs_embed.2.weight", "ofs_embed.2.bias"],
}
# (patch projection input features, pos table rows) of the tiny instances: 4 or 8 channels,
# 3 (1.0) or 5 (1.5) compressed frames of a 4x6 patch grid
SHAPES = {
    "2b": {"mixins.patch_embed.proj.weight": (HIDDEN, 4 * 4), "mixins.pos_embed.pos_embedding": (1, TEXT_LENGTH + 3 * 4 * 6, HIDDEN)},
    "5b": {"mixins.patch_embed.proj.weight": (HIDDEN, 4 * 4), "transformer.position_embeddings.weight": (64, HIDDEN)},
    "5b_i2v": {"mixins.patch_embed.proj.weight": (HIDDEN, 8 * 4), "mixins.pos_embed.pos_embedding": (1, TEXT_LENGTH + 3 * 4 * 6, HIDDEN)},
    "1.5": {"mixins.patch_embed.proj.weight": (HIDDEN, 4 * 8), "mixins.final_layer.linear.weight": (4 * 8, HIDDEN)},
    "1.5_i2v": {"mixins.patch_embed.proj.weight": (HIDDEN, 8 * 8), "ofs_embed.0.weight": (32, 32)},
}


def expected_keys(variant: str) -> set[str]:
    layers = {k.format(i=i) for i in range(LAYERS) for k in PER_LAYER}
    return layers | set(COMMON) | set(VARIANT_KEYS[variant])


@pytest.mark.parametrize("variant", sorted(VARIANT_KEYS))
def test_exact_state_dict_keys(variant):
    model = instantiate_from_config(network_config(variant))
    state = model.state_dict()
    assert set(state) == expected_keys(variant)
    for key, shape in SHAPES[variant].items():
        assert tuple(state[key].shape) == shape, key


def test_tiny_2b_keys_equal_official_fixture(official_fixtures):
    from safetensors.torch import load_file

    official = load_file(official_fixtures / "dit_2b_sincos" / "state_dict.safetensors")
    assert set(official) == expected_keys("2b")


def test_derived_tables_are_not_persistent_and_frozen_tables_are_not_parameters():
    rope = instantiate_from_config(network_config("5b"))
    assert {"freqs_cos", "freqs_sin"} <= {n.rsplit(".", 1)[-1] for n, _ in rope.named_buffers()}
    assert not any("freqs" in k for k in rope.state_dict())
    names = {n for n, _ in rope.named_parameters()}
    assert "transformer.position_embeddings.weight" not in names  # kept for loading only
    sincos = instantiate_from_config(network_config("2b"))
    assert "mixins.pos_embed.pos_embedding" not in {n for n, _ in sincos.named_parameters()}
    i2v = instantiate_from_config(network_config("5b_i2v"))
    assert i2v.get_parameter("mixins.pos_embed.pos_embedding").requires_grad


# Transformer parameter counts of the released models (REFERENCE.md), built from the official
# YAMLs unchanged on the meta device (no memory, no init cost).
OFFICIAL_COUNTS = {
    "cogvideox_2b": 1_693_783_872,
    "cogvideox_5b": 5_570_283_072,
    "cogvideox_5b_i2v": 5_625_087_552,
    "cogvideox1.5_5b": 5_570_676_352,
    "cogvideox1.5_5b_i2v": 5_571_594_880,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_official_yaml_builds_with_released_parameter_count(official_fixtures, name):
    cfg = OmegaConf.load(official_fixtures / "configs" / f"{name}.yaml").model.network_config
    with torch.device("meta"):
        model = instantiate_from_config(cfg)
    assert isinstance(model, DiffusionTransformer)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_COUNTS[name]


def test_official_lora_yaml_has_240_adapter_tensors_for_2b(official_fixtures):
    cfg = OmegaConf.load(official_fixtures / "configs" / "cogvideox_2b_lora.yaml").model.network_config
    with torch.device("meta"):
        model = instantiate_from_config(cfg)
    adapters = [k for k in model.state_dict() if ".matrix_A." in k or ".matrix_B." in k]
    assert len(adapters) == 240  # 30 layers x (3 + 1) x (A, B)
    assert "transformer.layers.29.attention.query_key_value.matrix_B.2" in adapters


def test_patch_size_int_and_list_forms_are_the_same_model():
    a = instantiate_from_config(network_config("5b", patch_size=2))
    b = instantiate_from_config(network_config("5b", patch_size=[1, 2, 2]))
    assert a.patch_size == b.patch_size == (1, 2, 2)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_interpolation_accepted_at_network_level_or_in_pos_embed_params():
    inside = instantiate_from_config(network_config("2b"))  # 2B YAML form
    cfg = network_config("2b", height_interpolation=1.875, width_interpolation=1.875)
    del cfg["params"]["modules"]["pos_embed_config"]["params"]["height_interpolation"]
    del cfg["params"]["modules"]["pos_embed_config"]["params"]["width_interpolation"]
    outside = instantiate_from_config(cfg)  # official-code form
    plain = instantiate_from_config(network_config("2b", height_interpolation=1.0))
    both_agree = instantiate_from_config(network_config("2b", height_interpolation=1.875))
    table = "mixins.pos_embed.pos_embedding"
    assert torch.equal(inside.state_dict()[table], outside.state_dict()[table])
    assert torch.equal(inside.state_dict()[table], both_agree.state_dict()[table])
    assert torch.equal(inside.state_dict()[table], plain.state_dict()[table])  # 1.0 = "not given"
    with pytest.raises(ValueError, match="height_interpolation"):
        instantiate_from_config(network_config("2b", height_interpolation=2.0))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transformer_args": {"checkpoint_activations": True, "bogus": 1}}, "valid keys"),
        ({"transformer_args": {"checkpoint_mode": "sometimes"}}, "checkpoint_mode"),
        ({"transformer_args": {"attention_backend": "xformers"}}, "attention_backend"),
        ({"transformer_args": {"model_parallel_size": 2}}, "model_parallel_size"),
        ({"transformer_args": {"num_layers": 7}}, "disagrees"),
        ({"patch_size": [2, 2]}, "patch_size"),
        ({"dtype": "fp8"}, "dtype"),
        ({"input_time": "concat"}, "input_time"),
    ],
)
def test_invalid_network_params_raise(change, message):
    with pytest.raises(ValueError, match=message):
        instantiate_from_config(network_config("5b", **change))


def test_missing_or_unknown_module_blocks_raise():
    cfg = network_config("5b")
    del cfg["params"]["modules"]["adaln_layer_config"]
    with pytest.raises(ValueError, match="adaln_layer_config"):
        instantiate_from_config(cfg)
    cfg = network_config("5b")
    cfg["params"]["modules"]["typo_config"] = {"target": "dit_video_concat.AdaLNMixin"}
    with pytest.raises(ValueError, match="typo_config"):
        instantiate_from_config(cfg)

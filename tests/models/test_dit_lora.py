"""LoRA: SAT lora2-compatible names and numbers, MLP targets, merging."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cogvideox_sat.models import LoraLinear
from cogvideox_sat.models.lora import LoraMixin, lora_parameter_names, mark_only_lora_trainable, merge_lora
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import HIDDEN, LAYERS, inputs, network_config, randomize_
from tests.models.test_dit_keys import expected_keys

R = 4


def lora_model(variant="2b", **lora):
    params = {"r": R, "lora_alpha": 2, **lora}
    return instantiate_from_config(network_config(variant, lora=params))


def adapter_keys(target: str, partitions: int) -> set[str]:
    return {
        f"transformer.layers.{i}.{target}.matrix_{m}.{p}" for i in range(LAYERS) for m in "AB" for p in range(partitions)
    }


def test_official_target_resolves_to_our_subclass_of_sat_lora2():
    from sat.model.finetune import lora2

    model = lora_model()
    mixin = model.get_mixin("lora")
    assert isinstance(mixin, LoraMixin) and isinstance(mixin, lora2.LoraMixin)
    assert LoraMixin.SUPPORTED_TARGETS == (
        "attention.query_key_value",
        "attention.dense",
        "mlp.dense_h_to_4h",
        "mlp.dense_4h_to_h",
    )
    assert mixin.scaling == 2 / R


def test_default_keys_are_sat_names_8_per_layer():
    state = lora_model().state_dict()
    adapters = adapter_keys("attention.query_key_value", 3) | adapter_keys("attention.dense", 1)
    base = {k for k in expected_keys("2b") if ".attention.query_key_value." not in k and ".attention.dense." not in k}
    originals = {
        f"transformer.layers.{i}.attention.{name}.original.{leaf}"
        for i in range(LAYERS)
        for name in ("query_key_value", "dense")
        for leaf in ("weight", "bias")
    }
    assert set(state) == base | originals | adapters
    assert len(adapters) == 8 * LAYERS
    assert state["transformer.layers.0.attention.query_key_value.matrix_A.2"].shape == (R, HIDDEN)
    assert state["transformer.layers.0.attention.query_key_value.matrix_B.2"].shape == (HIDDEN, R)  # one third of 3 x hidden
    assert state["transformer.layers.1.attention.dense.matrix_B.0"].shape == (HIDDEN, R)


def test_mlp_targets_and_layer_range():
    targets = ["attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"]
    state = lora_model(target_modules=targets).state_dict()
    adapters = {k for k in state if ".matrix_" in k}
    assert len(adapters) == 12 * LAYERS
    assert state["transformer.layers.0.mlp.dense_h_to_4h.matrix_B.0"].shape == (4 * HIDDEN, R)
    assert state["transformer.layers.0.mlp.dense_4h_to_h.matrix_A.0"].shape == (R, 4 * HIDDEN)
    only_one = lora_model(layer_range=[1]).state_dict()
    assert {k.split(".")[2] for k in only_one if ".matrix_" in k} == {"1"}


@pytest.mark.parametrize(
    ("params", "message"),
    [({"r": 0}, "rank"), ({"target_modules": ["mlp.fc1"]}, "target_modules"), ({"layer_range": [5]}, "layer_range"), ({"qlora": True}, "qlora")],
)
def test_invalid_lora_params_raise(params, message):
    with pytest.raises(ValueError, match=message):
        LoraMixin(layer_num=LAYERS, **{"r": R, **params})


def test_matches_sat_lora_linear_numerically():
    # SAT's own LoraLinear (forward needs no process group) as the reference; same state-dict keys.
    from sat.model.finetune.lora2 import LoraLinear as SatLoraLinear

    torch.manual_seed(0)
    base = nn.Linear(16, 24)
    sat = SatLoraLinear(nn.Linear, 3, 16, 24, R, 3.0, 0.0, original_obj=base)
    with torch.no_grad():
        for p in sat.matrix_B:
            p.normal_()
    ours = LoraLinear(nn.Linear(16, 24), partition=3, r=R, lora_alpha=3.0)
    ours.load_state_dict(sat.state_dict(), strict=True)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(ours(x), sat(x), rtol=1e-6, atol=1e-6)


def test_lora_linear_formula_and_merge():
    torch.manual_seed(1)
    layer = LoraLinear(nn.Linear(8, 12), partition=3, r=2, lora_alpha=4.0)
    with torch.no_grad():
        for b in layer.matrix_B:
            b.normal_()
    x = torch.randn(3, 8)
    w, bias = layer.original.weight, layer.original.bias
    delta = torch.cat([b @ a for a, b in zip(layer.matrix_A, layer.matrix_B)]) * (4.0 / 2)
    torch.testing.assert_close(layer(x), x @ (w + delta).T + bias)
    merged = layer.merged()
    assert type(merged) is nn.Linear and merged.weight.dtype == w.dtype
    torch.testing.assert_close(merged(x), layer(x))


def test_fresh_adapters_do_not_change_the_model_and_merge_is_equivalent():
    kwargs = inputs("2b")
    plain = randomize_(instantiate_from_config(network_config("2b")), seed=7).eval()
    model = lora_model().eval()
    model.load_state_dict(_into_lora(plain.state_dict(), model), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**kwargs), plain(**kwargs), rtol=0, atol=0)  # B = 0
        for name in lora_parameter_names(model):
            if ".matrix_B." in name:
                model.get_parameter(name).normal_(0, 0.5)
        adapted = model(**kwargs)
    assert (adapted - plain(**kwargs)).abs().max() > 1e-3
    model.get_mixin("lora").merge_lora()
    assert set(model.state_dict()) == set(plain.state_dict())  # plain keys again
    with torch.no_grad():
        merged = model(**kwargs)
    assert ((merged - adapted).abs().max() / adapted.abs().max()) < 1e-5


def test_module_level_merge_and_trainable_marking():
    model = lora_model(target_modules=["attention.query_key_value", "mlp.dense_4h_to_h"])
    trainable = mark_only_lora_trainable(model)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == set(lora_parameter_names(model))
    assert trainable == sum(model.get_parameter(n).numel() for n in names)
    assert merge_lora(model) == 2 * LAYERS
    assert not any(".matrix_" in k or ".original." in k for k in model.state_dict())


def _into_lora(state: dict, model: nn.Module) -> dict:
    """Plain weights under LoRA names, adapters from the model (as the checkpoint loader does)."""
    target = model.state_dict()
    out = {}
    for key in target:
        plain = key.replace(".original.", ".")
        out[key] = state[plain] if plain in state else target[key]
    return out

"""SAT LoRA adapters exported for diffusers reproduce the SAT model (scaling folded in)."""

from __future__ import annotations

import pytest
import torch

from cogvideox_sat.io.diffusers_keys import sat_lora_to_diffusers
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import LAYERS, inputs, network_config, randomize_

pytest.importorskip("diffusers")
pytest.importorskip("peft")
from tests.models.test_dit_diffusers_parity import diffusers_reference, max_rel_err, reference_forward  # noqa: E402

TARGETS = ["attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"]


def test_exported_lora_in_diffusers_matches_sat():
    lora = {"r": 4, "lora_alpha": 2, "target_modules": TARGETS}
    model = randomize_(instantiate_from_config(network_config("5b", lora=lora)), seed=3).eval()  # B != 0
    base = {k.replace(".original.", "."): v for k, v in model.state_dict().items() if ".matrix_" not in k}
    plain = instantiate_from_config(network_config("5b"))
    plain.load_state_dict(base, strict=True)

    adapters = sat_lora_to_diffusers(model.state_dict(), lora_alpha=2)
    assert len(adapters) == LAYERS * 2 * (3 + 1 + 1 + 1)
    assert "transformer_blocks.1.attn1.to_v.lora_B.weight" in adapters
    assert "transformer_blocks.0.ff.net.0.proj.lora_A.weight" in adapters

    kwargs = inputs("5b")
    ref = diffusers_reference("5b", plain)
    with torch.no_grad():
        without = reference_forward(ref, "5b", kwargs)
        ref.load_lora_adapter(adapters, adapter_name="sat", prefix=None)
        with_lora = reference_forward(ref, "5b", kwargs)
        ours = model(**kwargs)
    assert max_rel_err(ours, with_lora) <= 1e-5
    assert max_rel_err(ours, without) > 1e-3  # the adapters matter

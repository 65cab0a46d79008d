"""Runtime behaviour: dtype, activation checkpointing modes, buffers and devices, input checks."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cogvideox_sat.models.checkpointing import _ATTENTION_KERNELS
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import TEXT_LENGTH, inputs, network_config, randomize_


def build(variant="5b", seed=0, **overrides):
    return randomize_(instantiate_from_config(network_config(variant, **overrides)), seed=seed)


class CountAttention(TorchDispatchMode):
    """Counts forward attention-kernel calls at the aten level."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _ATTENTION_KERNELS:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def grads_of(model, kwargs):
    model.zero_grad()
    out = model(**kwargs)
    (out.float() ** 2).mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", ["2b", "1.5_i2v"])
def test_checkpoint_modes_give_equal_outputs_and_grads(variant):
    model = build(variant)
    kwargs = inputs(variant)
    model.set_checkpoint_mode("none")
    ref_out, ref_grads = grads_of(model, kwargs)
    assert len(ref_grads) == len(list(model.parameters()))
    for mode in ("full", "selective"):
        model.set_checkpoint_mode(mode)
        out, grads = grads_of(model, kwargs)
        torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
        assert grads.keys() == ref_grads.keys()
        for name in grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-7, msg=f"{mode}: {name}")


def test_selective_checkpointing_does_not_recompute_attention():
    model = build("5b")
    kwargs = inputs("5b")
    calls = {}
    for mode in ("none", "full", "selective"):
        model.set_checkpoint_mode(mode)
        counter = CountAttention()
        with counter:
            model(**kwargs).sum().backward()
        calls[mode] = counter.calls
    layers = model.num_layers
    assert calls == {"none": layers, "full": 2 * layers, "selective": layers}


def test_checkpoint_mode_from_transformer_args():
    args = {"checkpoint_activations": True, "checkpoint_mode": "selective"}
    assert instantiate_from_config(network_config("5b", transformer_args=args)).checkpoint_mode == "selective"
    args = {"checkpoint_activations": True}
    assert instantiate_from_config(network_config("5b", transformer_args=args)).checkpoint_mode == "full"
    args = {"checkpoint_activations": False, "checkpoint_mode": "selective"}
    assert instantiate_from_config(network_config("5b", transformer_args=args)).checkpoint_mode == "none"


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_dtype_param_casts_inputs_and_runs_in_that_precision(dtype):
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    reference = build("5b", seed=3).eval()
    model = build("5b", seed=3, dtype=dtype).eval().to(torch_dtype)
    assert model.dtype == torch_dtype
    kwargs = inputs("5b")  # float32 inputs, cast by the model as officially
    with torch.no_grad():
        expected = reference(**kwargs)
        out = model(**kwargs)
    assert out.dtype == torch_dtype
    rel = ((out.float() - expected).abs().max() / expected.abs().max()).item()
    assert rel < (2e-2 if dtype == "bf16" else 5e-3)


def test_derived_buffers_follow_to_and_meta_build_can_be_restored():
    model = build("5b_i2v")
    model.to(torch.float64)
    assert model.mixins["pos_embed"].freqs_cos.dtype == torch.float64
    with torch.device("meta"):
        lazy = instantiate_from_config(network_config("5b_i2v"))
    lazy.to_empty(device="cpu")
    lazy.reset_derived_buffers()
    lazy.load_state_dict(build("5b_i2v").state_dict(), strict=True)
    reference = build("5b_i2v").eval()
    kwargs = inputs("5b_i2v")
    with torch.no_grad():
        assert torch.equal(lazy.eval()(**kwargs), reference(**kwargs))


def test_concat_images_smaller_batch_is_tiled_as_official():
    model = build("5b_i2v").eval()
    kwargs = inputs("5b_i2v", batch=4)
    half = kwargs["concat_images"][:2]
    tiled = dict(kwargs, concat_images=torch.cat([half, half]))
    with torch.no_grad():
        torch.testing.assert_close(model(**dict(kwargs, concat_images=half)), model(**tiled), rtol=0, atol=0)


def test_input_errors_are_explained():
    model = build("1.5").eval()
    with pytest.raises(ValueError, match="pad the latents"):
        model(**inputs("1.5", frames=3))
    with pytest.raises(ValueError, match="exceeds the position table"):
        model(**inputs("1.5", frames=12))
    sincos = build("2b").eval()
    kwargs = inputs("2b")
    with pytest.raises(ValueError, match="text_length"):
        sincos(**dict(kwargs, context=kwargs["context"][:, : TEXT_LENGTH - 1]))
    with pytest.raises(ValueError, match="ofs"):
        build("1.5_i2v")(**{k: v for k, v in inputs("1.5_i2v").items() if k != "ofs"})
    with pytest.raises(ValueError, match="in_channels"):
        build("5b_i2v")(**{k: v for k, v in inputs("5b_i2v").items() if k != "concat_images"})


def test_rope_model_accepts_any_text_length():
    model = build("5b").eval()
    kwargs = inputs("5b")
    with torch.no_grad():
        out = model(**dict(kwargs, context=kwargs["context"][:, :5]))
    assert out.shape == kwargs["x"].shape


def test_official_loss_and_sampler_extras_are_accepted():
    model = build("5b").eval()
    with torch.no_grad():
        a = model(**inputs("5b"))
        b = model(**inputs("5b"), idx=torch.tensor([3, 4]), scale_emb=None)
    assert torch.equal(a, b)


def test_rot_v_also_rotates_values():
    cfg = network_config("5b")
    model = build("5b", seed=5).eval()
    cfg["params"]["modules"]["pos_embed_config"]["params"]["rot_v"] = True
    rotated = instantiate_from_config(cfg).eval()
    rotated.load_state_dict(model.state_dict(), strict=True)
    kwargs = inputs("5b")
    with torch.no_grad():
        assert (rotated(**kwargs) - model(**kwargs)).abs().max() > 1e-4


def test_ofs_width_must_match_time_embedding():
    with pytest.raises(ValueError, match="ofs_embed_dim"):
        instantiate_from_config(network_config("1.5_i2v", ofs_embed_dim=16))

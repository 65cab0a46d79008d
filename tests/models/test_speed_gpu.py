"""CUDA-only checks of the speed levers (skipped on CPU): compiled layers (inductor, cuDNN
attention on Hopper) and the keep-more checkpointing modes give the eager default's numbers
in bf16."""

from __future__ import annotations

import pytest
import torch

from cogvideox_sat.models.lora import mark_only_lora_trainable
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import inputs, network_config, randomize_

pytestmark = pytest.mark.gpu


def cuda_model(variant: str, lora: bool):
    cfg = network_config(variant, lora={"r": 4, "lora_alpha": 8} if lora else None, dtype="bf16")
    model = randomize_(instantiate_from_config(cfg), seed=4).cuda().to(torch.bfloat16)
    if lora:
        mark_only_lora_trainable(model)
    return model


def cuda_step(model, kwargs):
    model.zero_grad(set_to_none=True)
    out = model(**kwargs)
    out.float().pow(2).mean().backward()
    grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach().float(), grads


def assert_close_step(result, reference, what):
    out, grads = result
    ref_out, ref_grads = reference
    assert ((out - ref_out).abs().max() / ref_out.abs().max()).item() < 2e-2, what
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        scale = ref_grads[name].abs().max().clamp_min(1e-6)
        assert ((g - ref_grads[name]).abs().max() / scale).item() < 5e-2, f"{what}: {name}"


def cuda_inputs(variant: str) -> dict:
    return {k: v.cuda().to(torch.bfloat16) if v.is_floating_point() and k != "timesteps" else v.cuda() for k, v in inputs(variant).items()}


@pytest.mark.parametrize(("variant", "lora"), [("2b", True), ("5b", True), ("1.5_i2v", False)])
def test_keep_more_modes_match_eager_default(variant, lora):
    model = cuda_model(variant, lora)
    kwargs = cuda_inputs(variant)
    model.set_checkpoint_mode("none")
    reference = cuda_step(model, kwargs)
    for mode in ("selective_mlp_out", "selective_matmul"):
        model.set_checkpoint_mode(mode)
        assert_close_step(cuda_step(model, kwargs), reference, mode)


@pytest.mark.parametrize(
    ("variant", "lora", "mode", "compile_mode"),
    [("2b", True, "selective", "default"), ("1.5_i2v", False, "selective_mlp_out", "default"), ("2b", False, "selective", "max-autotune")],
)
def test_inductor_compiled_layers_match_eager_default(variant, lora, mode, compile_mode):
    torch._dynamo.reset()
    model = cuda_model(variant, lora)
    kwargs = cuda_inputs(variant)
    model.set_checkpoint_mode("none")
    reference = cuda_step(model, kwargs)
    model.set_checkpoint_mode(mode)
    model.set_compile(True, "inductor", compile_mode)
    for _ in range(2):
        assert_close_step(cuda_step(model, kwargs), reference, f"{mode}+compile ({compile_mode})")
    torch._dynamo.reset()


def test_compiled_full_finetune_at_real_size_has_finite_adaln_gradients():
    """Two 2B layers at the real 49x480x720 sequence (17,776 tokens): a `where`-mask form of the
    segment modulation gave non-finite adaLN gradients through inductor at this size (not on
    toy sizes); the compiled step must give the eager gradients."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from dit_step import build_ours, make_inputs, parse_setting
    from vs_diffusers import our_config

    torch._dynamo.reset()
    cfg = our_config("2b-full", 128, False, "bf16")
    cfg["params"]["num_layers"] = 2
    results = {}
    for setting in ("selective", "selective+compile", "none+compile"):
        torch.manual_seed(0)
        model, _ = build_ours(cfg, parse_setting(setting), "cuda", torch.bfloat16, "auto")
        torch.manual_seed(1)
        kwargs = make_inputs(model, 1, 49, 480, 720, "cuda", torch.bfloat16)
        for _ in range(2):
            results[setting] = cuda_step(model, kwargs)
        del model
        torch._dynamo.reset()
    ref_out, ref_grads = results["selective"]
    for setting in ("selective+compile", "none+compile"):
        out, grads = results[setting]
        bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
        assert not bad, f"{setting}: non-finite gradients {bad[:4]}"
        # The key LayerNorm's bias shifts every key equally (2B has no RoPE), which softmax ignores: its exact
        # gradient is 0 and what bf16 leaves is rounding noise, so it is held to the global scale.
        noise = {n: grads.pop(n) for n in list(grads) if n.startswith("mixins.adaln_layer.key_layernorm_list.") and n.endswith(".bias")}
        assert noise and all(n.startswith("mixins.adaln_layer.key_layernorm_list.") for n in noise)
        global_scale = max(g.abs().max() for g in ref_grads.values())
        for name, g in noise.items():
            assert ((g - ref_grads[name]).abs().max() / global_scale).item() < 1e-2, f"{setting}: {name}"
        assert_close_step((out, grads), (ref_out, {n: g for n, g in ref_grads.items() if n not in noise}), setting)

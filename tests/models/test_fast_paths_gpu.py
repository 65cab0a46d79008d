"""CUDA-only numerics of the fast paths (skipped on CPU; FA4 / torchao tests skip when the
package is missing): FlashAttention-4 against cuDNN SDPA and float32, alone and inside the
compiled, selectively checkpointed DiT; FP8 matmuls and FP8 base storage against bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cogvideox_sat.models import flash_attention4
from cogvideox_sat.models.attention import attention_bshd
from cogvideox_sat.models.lora import mark_only_lora_trainable
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import inputs, network_config, randomize_
from tests.models.test_speed_gpu import assert_close_step, cuda_step

pytestmark = pytest.mark.gpu


def need_fa4() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    reason = flash_attention4.unavailable_reason(torch.device("cuda"), torch.bfloat16, 64, 0.0)
    if reason is not None:
        pytest.skip(f"FlashAttention-4 {reason}")


def cuda_model(variant: str, lora: bool = True, hidden: int = 128, heads: int = 2, **transformer_args):
    """A small bf16 DiT (head_dim 64 as in CogVideoX) on the GPU, LoRA-only trainable."""
    cfg = network_config(
        variant, lora={"r": 16, "lora_alpha": 16} if lora else None, dtype="bf16", hidden_size=hidden, num_attention_heads=heads, latent_height=32, latent_width=48
    )
    cfg["params"]["transformer_args"].update(transformer_args)
    model = randomize_(instantiate_from_config(cfg), seed=4).cuda().to(torch.bfloat16)
    if lora:
        mark_only_lora_trainable(model)
    return model


def cuda_inputs(variant: str):
    kwargs = inputs(variant, batch=2, height=32, width=48)
    return {k: v.cuda().to(torch.bfloat16) if v.is_floating_point() else v.cuda() for k, v in kwargs.items()}


def test_fa4_matches_cudnn_within_bf16_error():
    need_fa4()
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 2222, 6, 64, device="cuda", generator=gen) for _ in range(3))
    grad = torch.randn(2, 2222, 6, 64, device="cuda", generator=gen)

    def run(backend, dtype):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        if backend == "fp32":
            out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in leaves)).transpose(1, 2)
        else:
            out = attention_bshd(*leaves, backend=backend)
        grads = torch.autograd.grad(out, leaves, grad.to(dtype))
        return [t.float() for t in (out, *grads)]

    ref = run("fp32", torch.float32)
    for backend in ("cudnn", "fa4"):
        errors = [(a - r).abs().max().item() for a, r in zip(run(backend, torch.bfloat16), ref)]
        if backend == "cudnn":
            cudnn_errors = errors
    fa4_errors = errors
    for name, fa4_err, cudnn_err in zip(("out", "dq", "dk", "dv"), fa4_errors, cudnn_errors):
        assert fa4_err <= 2 * cudnn_err + 1e-3, f"{name}: fa4 {fa4_err:.2e} vs cudnn {cudnn_err:.2e}"


@pytest.mark.parametrize("variant", ["2b", "5b"])
def test_compiled_selective_dit_with_fa4_equals_cudnn(variant):
    need_fa4()
    kwargs = cuda_inputs(variant)
    ref_model = cuda_model(variant, checkpoint_activations=True, checkpoint_mode="selective", attention_backend="cudnn")
    model = cuda_model(variant, checkpoint_activations=True, checkpoint_mode="selective", attention_backend="auto", compile=True)
    model.load_state_dict(ref_model.state_dict())
    torch._dynamo.reset()
    assert_close_step(cuda_step(model, kwargs), cuda_step(ref_model, kwargs), f"{variant} fa4 compiled")
    with torch.no_grad():  # sampling path (no grad, compiled)
        out, ref = model(**kwargs).float(), ref_model(**kwargs).float()
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 2e-2
    torch._dynamo.reset()


def test_fp8_matmuls_stay_close_to_bf16():
    pytest.importorskip("torchao.float8")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 matmuls need sm89+")
    kwargs = cuda_inputs("5b")
    ref_model = cuda_model("5b", checkpoint_activations=True, checkpoint_mode="selective")
    for recipe in ("tensorwise", "rowwise"):
        model = cuda_model("5b", checkpoint_activations=True, checkpoint_mode="selective", fp8=recipe, compile=True)
        model.load_state_dict(ref_model.state_dict())
        out, grads = cuda_step(model, kwargs)
        ref_out, ref_grads = cuda_step(ref_model, kwargs)
        assert ((out - ref_out).norm() / ref_out.norm()).item() < 0.1, recipe
        for name in ref_grads:
            cos = F.cosine_similarity(grads[name].flatten(), ref_grads[name].flatten(), dim=0).item()
            assert cos > 0.95, f"{recipe}: {name} cosine {cos:.3f}"
        torch._dynamo.reset()


def test_fp8_base_storage_halves_base_memory_and_stays_close():
    kwargs = cuda_inputs("5b")
    ref_model = cuda_model("5b", hidden=256, heads=4, checkpoint_activations=True, checkpoint_mode="selective")
    model = cuda_model("5b", hidden=256, heads=4, checkpoint_activations=True, checkpoint_mode="selective", fp8_base_storage=True)
    model.load_state_dict(ref_model.state_dict(), strict=True)
    base_bytes = lambda m: sum(p.numel() * p.element_size() for n, p in m.named_parameters() if not p.requires_grad)  # noqa: E731
    assert base_bytes(model) < 0.65 * base_bytes(ref_model)
    out, grads = cuda_step(model, kwargs)
    ref_out, ref_grads = cuda_step(ref_model, kwargs)
    assert ((out - ref_out).norm() / ref_out.norm()).item() < 0.05
    for name in ref_grads:
        assert F.cosine_similarity(grads[name].flatten(), ref_grads[name].flatten(), dim=0).item() > 0.98, name

"""CUDA-only checks (skipped on CPU): every SDPA backend and every checkpointing mode agree."""

from __future__ import annotations

import pytest
import torch

from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import inputs, network_config, randomize_

pytestmark = pytest.mark.gpu


def cuda_inputs(variant: str, dtype: torch.dtype) -> dict:
    return {k: v.cuda().to(dtype) if v.is_floating_point() and k != "timesteps" else v.cuda() for k, v in inputs(variant).items()}


@pytest.mark.parametrize("variant", ["2b", "1.5_i2v"])
def test_backends_match_fp32_cpu_reference(variant):
    reference = randomize_(instantiate_from_config(network_config(variant)), seed=1).eval()
    with torch.no_grad():
        expected = reference(**inputs(variant))
    model = randomize_(instantiate_from_config(network_config(variant, dtype="bf16")), seed=1).eval().cuda().to(torch.bfloat16)
    for backend in ("auto", "torch", "flash", "efficient", "cudnn", "math"):
        model.set_attention_backend(backend)
        try:
            with torch.no_grad():
                out = model(**cuda_inputs(variant, torch.bfloat16))
        except RuntimeError as err:  # kernel not built for this GPU / shape
            if backend in ("flash", "efficient", "cudnn"):
                continue
            raise err
        rel = ((out.float().cpu() - expected).abs().max() / expected.abs().max()).item()
        assert rel < 3e-2, (backend, rel)


def test_checkpoint_modes_agree_on_cuda():
    model = randomize_(instantiate_from_config(network_config("5b_i2v", dtype="bf16")), seed=2).cuda().to(torch.bfloat16)
    kwargs = cuda_inputs("5b_i2v", torch.bfloat16)
    results = {}
    for mode in ("none", "full", "selective"):
        model.set_checkpoint_mode(mode)
        model.zero_grad(set_to_none=True)
        out = model(**kwargs)
        out.float().pow(2).mean().backward()
        results[mode] = (out.detach(), {n: p.grad.float() for n, p in model.named_parameters()})
    out_ref, grads_ref = results["none"]
    for mode in ("full", "selective"):
        out, grads = results[mode]
        torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
        for name, g in grads.items():
            torch.testing.assert_close(g, grads_ref[name], rtol=2e-2, atol=1e-3, msg=f"{mode}: {name}")

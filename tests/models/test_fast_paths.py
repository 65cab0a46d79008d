"""The fast paths on the CPU: FlashAttention-4 selection and its custom op (run here with a float32
reference kernel in FA4's calling convention), FP8 storage of the frozen base, torchao FP8
conversion, and the transformer_args that switch them."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from cogvideox_sat.models import attention as attention_module
from cogvideox_sat.models import dit as dit_module
from cogvideox_sat.models import flash_attention4
from cogvideox_sat.models.attention import attention_bshd, resolve_backend
from cogvideox_sat.models.fp8_storage import Float8StoredLinear, dequantize, quantize_rows
from cogvideox_sat.models.lora_linear import LoraLinear
from cogvideox_sat.models.transformer_args import TransformerArgs
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import LAYERS, inputs, network_config, randomize_

LORA = {"r": 4, "lora_alpha": 4}


# ---- a reference FA4 kernel pair for the CPU ------------------------------------------------------
class ReferenceFA4:
    """flash_attn_func / _flash_attn_bwd with FA4's signatures and layouts, in float32 math."""

    def __init__(self):
        self.forward_calls = 0
        self.backward_calls = 0

    def forward(self, q, k, v, softmax_scale, causal, return_lse):
        assert not causal and return_lse
        self.forward_calls += 1
        qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))  # (B, H, S, D)
        scores = qf @ kf.transpose(-1, -2) * softmax_scale
        lse = scores.logsumexp(-1)
        out = (scores - lse[..., None]).exp() @ vf
        return out.transpose(1, 2).to(q.dtype).contiguous(), lse

    def backward(self, q, k, v, out, dout, lse, softmax_scale, causal):
        self.backward_calls += 1
        qf, kf, vf, of, dof = (t.float().transpose(1, 2) for t in (q, k, v, out, dout))
        p = (qf @ kf.transpose(-1, -2) * softmax_scale - lse[..., None]).exp()
        dv = p.transpose(-1, -2) @ dof
        ds = p * (dof @ vf.transpose(-1, -2) - (dof * of).sum(-1, keepdim=True))
        dq, dk = ds @ kf * softmax_scale, ds.transpose(-1, -2) @ qf * softmax_scale
        return tuple(g.transpose(1, 2).to(q.dtype).contiguous() for g in (dq, dk, dv))


@pytest.fixture
def fa4_on_cpu(monkeypatch):
    """FA4 'available' on the CPU, backed by ReferenceFA4."""
    ref = ReferenceFA4()
    monkeypatch.setattr(flash_attention4, "kernels", lambda: (ref.forward, ref.backward))
    monkeypatch.setattr(flash_attention4, "unavailable_reason", lambda *args: None)
    return ref


def build(variant="5b", lora=None, seed=0, dtype=None, **transformer_args):
    cfg = network_config(variant, lora=lora) if dtype is None else network_config(variant, lora=lora, dtype=dtype)
    cfg["params"]["transformer_args"].update(transformer_args)
    return randomize_(instantiate_from_config(cfg), seed=seed)


def loss_and_grads(model, kwargs):
    model.zero_grad(set_to_none=True)
    out = model(**kwargs)
    (out.float() ** 2).mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---- selection ---------------------------------------------------------------------------------
def test_auto_keeps_sdpa_on_the_cpu_and_fa4_explains_why_not():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, torch.bfloat16, 64) == "auto"
    assert resolve_backend("cudnn", cpu, torch.bfloat16, 64) == "cudnn"
    with pytest.raises(ValueError, match="attention_backend: fa4 cannot run here: FlashAttention-4 needs a CUDA GPU"):
        resolve_backend("fa4", cpu, torch.bfloat16, 64)
    assert flash_attention4.unavailable_reason(cpu, torch.bfloat16, 64, 0.0) == "needs a CUDA GPU, not cpu"


def test_auto_picks_fa4_where_it_can_run(fa4_on_cpu):
    assert resolve_backend("auto", torch.device("cpu"), torch.bfloat16, 64) == "fa4"
    assert resolve_backend("fa4", torch.device("cpu"), torch.bfloat16, 64) == "fa4"


def test_auto_falls_back_with_one_log_line_per_reason(monkeypatch, caplog):
    monkeypatch.setattr(flash_attention4, "unavailable_reason", lambda *args: "is not installed (test)")
    monkeypatch.setattr(attention_module, "_REPORTED", set())
    gpu = torch.device("cuda", 0)  # only compared, never touched
    with caplog.at_level(logging.WARNING, logger=attention_module.__name__):
        assert [resolve_backend("auto", gpu, torch.bfloat16, 64) for _ in range(3)] == ["auto"] * 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["attention_backend auto: FlashAttention-4 is not installed (test); using cuDNN SDPA"]


def test_fa4_rejects_what_it_cannot_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(flash_attention4, "_installed", lambda: True)
    gpu = torch.device("cuda", 0)
    assert flash_attention4.unavailable_reason(gpu, torch.bfloat16, 64, 0.0) is None
    assert "bf16 or fp16" in flash_attention4.unavailable_reason(gpu, torch.float32, 64, 0.0)
    assert "head_dim 256" in flash_attention4.unavailable_reason(gpu, torch.bfloat16, 256, 0.0)
    assert "dropout" in flash_attention4.unavailable_reason(gpu, torch.bfloat16, 64, 0.1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert "sm80" in flash_attention4.unavailable_reason(gpu, torch.bfloat16, 64, 0.0)


# ---- the custom op -----------------------------------------------------------------------------
def test_only_fa4s_aux_data_dsl_warning_is_silenced():
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        flash_attention4.quiet_aux_data_warning()
        warnings.warn("Argument aux_data (position 21) cannot be converted to a JitArgument for function 'x'", UserWarning)
        warnings.warn("Argument scale (position 3) cannot be converted to a JitArgument", UserWarning)
    assert [str(w.message) for w in seen] == ["Argument scale (position 3) cannot be converted to a JitArgument"]


def test_fa4_op_matches_sdpa_values_and_grads(fa4_on_cpu):
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 37, 3, 4, 16, generator=gen).requires_grad_()  # packed projection layout
    q, k, v = qkv.unbind(2)  # strided (B, S, H, D) views, as the layer passes them
    out = attention_bshd(q, k, v, backend="fa4")
    grad = torch.randn(out.shape, generator=gen)
    (dqkv,) = torch.autograd.grad(out, qkv, grad)
    ref = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    (dref,) = torch.autograd.grad(ref, qkv, grad)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dqkv, dref, atol=1e-5, rtol=1e-5)
    assert fa4_on_cpu.forward_calls == 1 and fa4_on_cpu.backward_calls == 1


@pytest.mark.parametrize("mode, forward_calls", [("selective", LAYERS), ("full", 2 * LAYERS)])
def test_dit_with_fa4_equals_sdpa_and_selective_checkpointing_keeps_its_output(fa4_on_cpu, mode, forward_calls):
    kwargs = inputs("5b")
    ref_model = build("5b", lora=LORA, checkpoint_activations=True, checkpoint_mode=mode, attention_backend="math")
    model = build("5b", lora=LORA, checkpoint_activations=True, checkpoint_mode=mode, attention_backend="fa4")
    model.load_state_dict(ref_model.state_dict())
    out, grads = loss_and_grads(model, kwargs)
    ref_out, ref_grads = loss_and_grads(ref_model, kwargs)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    # selective keeps the kernel's output: the forward kernel is not run again in backward
    assert fa4_on_cpu.forward_calls == forward_calls and fa4_on_cpu.backward_calls == LAYERS


def test_compiled_dit_with_fa4_has_no_graph_break_and_equals_eager(fa4_on_cpu):
    from torch._dynamo.utils import counters

    kwargs = inputs("2b")
    eager = build("2b", lora=LORA, checkpoint_activations=True, checkpoint_mode="selective", attention_backend="fa4")
    compiled = build("2b", lora=LORA, checkpoint_activations=True, checkpoint_mode="selective", attention_backend="fa4")
    compiled.set_compile(True, "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    out, grads = loss_and_grads(compiled, kwargs)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    ref_out, ref_grads = loss_and_grads(eager, kwargs)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    torch._dynamo.reset()


# ---- FP8 storage of the frozen base ------------------------------------------------------------
def test_quantize_rows_is_e4m3_accurate_with_power_of_two_scales():
    w = torch.randn(48, 32) * torch.logspace(-3, 1, 48)[:, None]  # rows of very different sizes
    data, scale = quantize_rows(w)
    assert data.dtype == torch.uint8 and scale.shape == (48, 1)
    assert torch.equal(scale, torch.exp2(torch.log2(scale).round()))  # exact in bf16 / fp16
    back = dequantize(data, scale, torch.float32)
    rel = ((back - w).abs() / w.abs().amax(dim=1, keepdim=True)).max()
    assert 0 < rel <= 2**-4  # e4m3: 3 mantissa bits, relative to each row's largest value


def test_float8_stored_linear_values_grads_and_saved_tensors():
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 48).requires_grad_(False)
    stored = Float8StoredLinear(linear)
    x = torch.randn(5, 7, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = stored(x)
    exact = F.linear(x, dequantize(stored.weight, stored.weight_scale, torch.float32), linear.bias)
    torch.testing.assert_close(out, exact)
    assert (out - linear(x)).abs().max() < 0.05 * linear(x).abs().max()
    # backward keeps the e4m3 bytes and scales, never an upcast (48, 32) weight
    assert not any(t.is_floating_point() and t.shape == (48, 32) for t in saved)
    (gx,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(gx, torch.ones(5, 7, 48) @ dequantize(stored.weight, stored.weight_scale, torch.float32))
    # casts of the model leave the bytes alone; scales stay exact
    stored.to(torch.bfloat16)
    assert stored.weight.dtype == torch.uint8 and stored.weight_scale.dtype == torch.bfloat16


def test_fp8_base_storage_keeps_keys_loads_checkpoints_and_stays_close(monkeypatch):
    monkeypatch.setattr(dit_module, "ALLOW_CPU_FOR_TESTS", True)
    kwargs = inputs("5b")
    plain = build("5b", lora=LORA)
    with torch.no_grad():  # non-zero adapters, so they take part
        for name, p in plain.named_parameters():
            if "matrix_B" in name:
                p.normal_(std=0.05)
    stored = build("5b", lora=LORA, seed=3, fp8_base_storage=True)
    assert stored.state_dict().keys() == plain.state_dict().keys()
    stored.load_state_dict(plain.state_dict(), strict=True)  # full-precision weights quantize on load
    n_stored = sum(isinstance(m, Float8StoredLinear) for m in stored.modules())
    assert n_stored == LAYERS * 5  # qkv, dense (LoRA originals), two MLP projections, adaLN modulation
    assert all(isinstance(m.original, Float8StoredLinear) for m in stored.modules() if isinstance(m, LoraLinear))
    # the float8 bytes are frozen parameters; adapters and norms keep their dtype
    bytes_ = {n for n, p in stored.named_parameters() if p.dtype == torch.uint8}
    assert len(bytes_) == n_stored and not any(p.requires_grad for n, p in stored.named_parameters() if n in bytes_)
    assert not any("matrix_" in n or "norm" in n for n in bytes_)
    out, grads = loss_and_grads(stored, kwargs)
    ref, ref_grads = loss_and_grads(plain, kwargs)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    for name in (n for n in ref_grads if "matrix_" in n):
        assert name in grads and torch.nn.functional.cosine_similarity(grads[name].flatten(), ref_grads[name].flatten(), dim=0) > 0.99
    # the saved weights read back as the quantized values: a second model loading them agrees exactly
    again = build("5b", lora=LORA, seed=5, fp8_base_storage=True)
    again.load_state_dict(stored.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(again(**kwargs), stored(**kwargs), atol=0, rtol=0)


def test_fp8_base_storage_is_refused_for_full_fine_tuning_and_on_the_cpu():
    with pytest.raises(ValueError, match="fp8_base_storage stores the frozen base of a LoRA run"):
        build("5b", fp8_base_storage=True)
    model = build("5b", lora=LORA, fp8_base_storage=True)
    with pytest.raises(ValueError, match=r"transformer_args.fp8_base_storage needs a CUDA GPU"):
        model(**inputs("5b"))


def test_lora_merge_over_an_fp8_base():
    model = build("5b", lora=LORA, fp8_base_storage=True)
    layer = model.transformer.layers[0].attention.query_key_value
    merged = layer.merged()
    assert merged.weight.dtype == torch.float32
    torch.testing.assert_close(merged.weight, layer.original.dequantized_weight() + layer.delta_weight())


# ---- FP8 matmuls (torchao) ---------------------------------------------------------------------
def test_transformer_args_fp8_values():
    assert TransformerArgs.from_config({}).fp8_recipe is None
    assert TransformerArgs.from_config({"fp8": True}).fp8_recipe == "tensorwise"
    assert TransformerArgs.from_config({"fp8": "rowwise"}).fp8_recipe == "rowwise"
    with pytest.raises(ValueError, match="transformer_args.fp8='colwise'; choose false, true, tensorwise or rowwise"):
        TransformerArgs.from_config({"fp8": "colwise"})
    with pytest.raises(ValueError, match="fp8 and fp8_base_storage cannot be combined"):
        TransformerArgs.from_config({"fp8": True, "fp8_base_storage": True})
    with pytest.raises(ValueError, match="fp8_base_storage must be true or false"):
        TransformerArgs.from_config({"fp8_base_storage": "yes"})
    # measured on an H100: compiled layers kept their MLP activations (53 GiB vs 12 GiB eager)
    with pytest.raises(ValueError, match="fp8_base_storage with compile: true .* set compile: false"):
        TransformerArgs.from_config({"fp8_base_storage": True, "compile": True})


def test_fp8_is_refused_on_the_official_parity_path():
    with pytest.raises(ValueError, match="transformer_args.fp8 needs the bf16 model .* official-parity path"):
        build("5b", lora=LORA, fp8=True)  # dtype fp32


def test_fp8_converts_the_frozen_base_projections_only(monkeypatch):
    pytest.importorskip("torchao.float8")
    from torchao.float8.float8_linear import Float8Linear

    monkeypatch.setattr(dit_module, "ALLOW_CPU_FOR_TESTS", True)
    plain = build("5b", lora=LORA, dtype="bf16").to(torch.bfloat16)
    model = build("5b", lora=LORA, dtype="bf16", fp8="rowwise").to(torch.bfloat16)
    model.load_state_dict(plain.state_dict(), strict=True)
    assert model.state_dict().keys() == plain.state_dict().keys()
    converted = [n for n, m in model.named_modules() if isinstance(m, Float8Linear)]
    assert len(converted) == LAYERS * 4
    assert all(n.endswith(("query_key_value.original", "dense.original", "dense_h_to_4h", "dense_4h_to_h")) for n in converted)
    # token counts like 13 frames' 5626 are not multiples of 16, which torch._scaled_mm needs
    assert all(m.config.pad_inner_dim for m in model.modules() if isinstance(m, Float8Linear))
    kwargs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs("5b").items()}
    out, ref = model(**kwargs), plain(**kwargs)
    assert ((out.float() - ref.float()).norm() / ref.float().norm()) < 0.1
    with pytest.raises(ValueError, match="transformer_args.fp8 needs a CUDA GPU"):
        monkeypatch.setattr(dit_module, "ALLOW_CPU_FOR_TESTS", False)
        model(**kwargs)


def test_fa4_inside_the_ulysses_exchange(fa4_on_cpu):
    """The sequence-parallel path hands FA4 its (B, S, heads / P, d) layout; a one-rank gloo group
    runs the real all-to-alls around it."""
    import torch.distributed as dist

    from cogvideox_sat.models.transformer import SelfAttention
    from cogvideox_sat.parallel.ulysses import SequenceShard

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        layer = SelfAttention(64, 4, 0.0, 0.0)
        hidden = torch.randn(2, 19, 64, requires_grad=True)
        shard = SequenceShard.split(19, dist.group.WORLD)
        out = layer(hidden, shard=shard, kernel="fa4")
        (grad,) = torch.autograd.grad(out.sum(), hidden)
        ref = layer(hidden, kernel="math")
        (ref_grad,) = torch.autograd.grad(ref.sum(), hidden)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)
        assert fa4_on_cpu.forward_calls == 1
    finally:
        if created:
            dist.destroy_process_group()

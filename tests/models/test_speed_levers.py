"""Speed levers give the default path's numbers: row-range adaLN ops without split/concat,
the fused LoRA matmuls (in the compute dtype), the keep-more checkpointing modes and compiled
layers (aot_eager here; inductor in one slow test)."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cogvideox_sat.models import LoraLinear
from cogvideox_sat.models import checkpointing
from cogvideox_sat.models.checkpointing import _ATTENTION_KERNELS, CHECKPOINT_MODES
from cogvideox_sat.models.lora import mark_only_lora_trainable
from cogvideox_sat.models.segments import gated_residual_segments, modulate_segments
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import HIDDEN, LAYERS, inputs, network_config, randomize_

aten = torch.ops.aten
LORA = {"r": 4, "lora_alpha": 8}


class OpLog(TorchDispatchMode):
    """Every aten op called, with its tensor arguments' dtypes."""

    def __init__(self):
        super().__init__()
        self.calls = []

    @property
    def ops(self):
        return [op for op, _ in self.calls]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = [a.dtype for a in args if isinstance(a, torch.Tensor)]
        self.calls.append((func, dtypes))
        return func(*args, **(kwargs or {}))


# ---- references: the official split-and-concat forms --------------------------------------
def split_modulate(x, L, text, image):
    return torch.cat((x[:, :L] * (1 + text[1]) + text[0], x[:, L:] * (1 + image[1]) + image[0]), dim=1)


def split_gated_residual(hidden, update, L, text_gate, image_gate):
    return torch.cat((hidden[:, :L] + text_gate * update[:, :L], hidden[:, L:] + image_gate * update[:, L:]), dim=1)


def grads(fn, tensors):
    out = fn(*tensors)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    inputs_ = [t for t in tensors if t.requires_grad]
    return (out, *torch.autograd.grad((out * weight).sum(), inputs_, allow_unused=True, materialize_grads=True))


def segment_inputs(trainable_modulation: bool, seq: int = 9):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, seq, 6, generator=gen, requires_grad=True)
    mods = [torch.randn(2, 1, 6, generator=gen, requires_grad=trainable_modulation) for _ in range(4)]
    return x, mods


@pytest.mark.parametrize("text_length", [0, 3, 9])
@pytest.mark.parametrize("trainable_modulation", [True, False])
def test_modulate_segments_equals_split_concat(text_length, trainable_modulation):
    x, (ts, tc, is_, ic) = segment_inputs(trainable_modulation)
    ours = grads(lambda x, *m: modulate_segments(x, text_length, (m[0], m[1]), (m[2], m[3])), (x, ts, tc, is_, ic))
    ref = grads(lambda x, *m: split_modulate(x, text_length, (m[0], m[1]), (m[2], m[3])), (x, ts, tc, is_, ic))
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=0)  # same operations per element
    assert len(ours) == len(ref) == (6 if trainable_modulation else 2)
    for a, b in zip(ours[1:], ref[1:]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("text_length", [0, 4, 9])
def test_gated_residual_segments_equals_split_concat(text_length):
    x, (tg, ig, _, _) = segment_inputs(True)
    update = torch.randn(x.shape, requires_grad=True)
    ours = grads(lambda h, u, a, b: gated_residual_segments(h, u, text_length, a, b), (x, update, tg, ig))
    ref = grads(lambda h, u, a, b: split_gated_residual(h, u, text_length, a, b), (x, update, tg, ig))
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=0)
    for a, b in zip(ours[1:], ref[1:]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_segment_ops_make_no_concatenation():
    x, (ts, tc, is_, ic) = segment_inputs(True)
    with OpLog() as log:
        out = modulate_segments(x, 3, (ts, tc), (is_, ic))
        out = gated_residual_segments(x, out, 3, ts, is_)
        out.sum().backward()
    assert not {aten.cat.default, aten.slice_backward.default} & set(log.ops)


def test_compiled_segment_ops_equal_eager():
    x, (ts, tc, is_, ic) = segment_inputs(True)
    update = torch.randn(x.shape)

    def layer(x, ts, tc, is_, ic):
        return gated_residual_segments(x, modulate_segments(x, 3, (ts, tc), (is_, ic)) * update, 3, ts, is_)

    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    ours = grads(compiled, (x, ts, tc, is_, ic))
    ref = grads(layer, (x, ts, tc, is_, ic))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---- LoRA --------------------------------------------------------------------------------
@pytest.mark.parametrize("partition", [1, 3])
def test_fused_lora_equals_per_partition_formula(partition):
    torch.manual_seed(0)
    layer = LoraLinear(torch.nn.Linear(8, 6 * partition), partition, r=3, lora_alpha=5.0)
    for b in layer.matrix_B:
        torch.nn.init.normal_(b)
    x = torch.randn(2, 7, 8, requires_grad=True)

    def reference(x):
        ups = [x @ a.t() @ b.t() for a, b in zip(layer.matrix_A, layer.matrix_B)]
        return layer.original(x) + torch.cat(ups, dim=-1) * layer.scaling

    params = [x, *layer.matrix_A, *layer.matrix_B]
    ours = grads(lambda *_: layer(x), params)
    ref = grads(lambda *_: reference(x), params)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lora_matmuls_run_in_the_compute_dtype_without_casts():
    model = randomize_(instantiate_from_config(network_config("2b", lora=LORA, dtype="bf16"))).to(torch.bfloat16)
    mark_only_lora_trainable(model)
    lora = model.transformer.layers[0].attention.query_key_value
    assert {p.dtype for p in lora.parameters()} == {torch.bfloat16}
    x = torch.randn(1, 5, HIDDEN, dtype=torch.bfloat16)
    with OpLog() as forward:
        out = lora(x)
    with OpLog() as backward:
        out.float().sum().backward()
    matmuls = [d for op, d in forward.calls + backward.calls if op in (aten.mm.default, aten.addmm.default)]
    assert len(matmuls) == 3 + 3 and all(set(d) == {torch.bfloat16} for d in matmuls)  # base, down, up; grads of B, down, A
    assert aten._to_copy.default not in forward.ops and aten.cat.default in forward.ops  # A's three partitions only

    # adapters kept in float32 (e.g. as optimizer masters) still multiply in bf16
    for p in [*lora.matrix_A, *lora.matrix_B]:
        p.data = p.data.float()
    with OpLog() as forward:
        out = lora(x)
    assert out.dtype == torch.bfloat16
    assert all(set(d) == {torch.bfloat16} for op, d in forward.calls if op in (aten.mm.default, aten.addmm.default))


# ---- checkpointing modes -------------------------------------------------------------------
def build(variant="5b", lora=True, seed=0, **overrides):
    model = randomize_(instantiate_from_config(network_config(variant, lora=LORA if lora else None, **overrides)), seed=seed)
    if lora:
        mark_only_lora_trainable(model)
    return model


def step(model, kwargs):
    model.zero_grad(set_to_none=True)
    out = model(**kwargs)
    (out.float() ** 2).mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_step(result, reference, atol=1e-7):
    out, grads_ = result
    ref_out, ref_grads = reference
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
    assert grads_.keys() == ref_grads.keys() and grads_
    for name in grads_:
        torch.testing.assert_close(grads_[name], ref_grads[name], rtol=1e-5, atol=atol, msg=name)


@pytest.mark.parametrize(("variant", "lora"), [("2b", True), ("1.5_i2v", False)])
def test_keep_more_modes_give_the_same_outputs_and_grads(variant, lora):
    model = build(variant, lora=lora)
    kwargs = inputs(variant)
    model.set_checkpoint_mode("none")
    reference = step(model, kwargs)
    for mode in ("selective_mlp_out", "selective_matmul"):
        model.set_checkpoint_mode(mode)
        assert_same_step(step(model, kwargs), reference)


class MatmulLog(TorchDispatchMode):
    """Forward attention kernels and matmuls (by weight shape) called inside backward."""

    def __init__(self):
        super().__init__()
        self.attention = 0
        self.weights = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _ATTENTION_KERNELS:
            self.attention += 1
        if func is aten.addmm.default:
            self.weights.append(tuple(args[2].shape))
        if func is aten.mm.default:
            self.weights.append(tuple(args[1].shape))
        return func(*args, **(kwargs or {}))


def recomputed(model, kwargs, mode):
    model.set_checkpoint_mode(mode)
    out = model(**kwargs)
    log = MatmulLog()
    with log:
        out.sum().backward()
    return log


def test_keep_more_modes_recompute_less():
    model = build("2b", lora=False)
    kwargs = inputs("2b")
    mlp_out = (4 * HIDDEN, HIDDEN)
    none = recomputed(model, kwargs, "none")  # backward matmuls only (gradients)
    full = recomputed(model, kwargs, "full")
    selective = recomputed(model, kwargs, "selective")
    mlp = recomputed(model, kwargs, "selective_mlp_out")
    matmul = recomputed(model, kwargs, "selective_matmul")
    assert (none.attention, full.attention, selective.attention, mlp.attention, matmul.attention) == (0, LAYERS, 0, 0, 0)
    forward_matmuls = 5 * LAYERS  # adaLN modulation, qkv, dense, mlp in, mlp out
    assert len(full.weights) == len(selective.weights) == len(none.weights) + forward_matmuls
    assert len(mlp.weights) == len(selective.weights) - LAYERS
    assert selective.weights.count(mlp_out) == none.weights.count(mlp_out) + LAYERS
    assert mlp.weights.count(mlp_out) == none.weights.count(mlp_out)
    assert len(matmul.weights) == len(none.weights)


def test_checkpoint_modes_are_validated():
    assert CHECKPOINT_MODES == ("full", "selective", "selective_mlp_out", "selective_matmul", "none")
    args = {"checkpoint_activations": True, "checkpoint_mode": "selective_mlp_out", "compile": True}
    model = instantiate_from_config(network_config("5b", transformer_args=args))
    assert model.checkpoint_mode == "selective_mlp_out" and model.compile_backend == "inductor"
    with pytest.raises(ValueError, match="compile must be true, false or max-autotune, got 'yes'"):
        instantiate_from_config(network_config("5b", transformer_args={"compile": "yes"}))
    tuned = instantiate_from_config(network_config("5b", transformer_args={"compile": "max-autotune"}))
    assert (tuned.compile_backend, tuned.compile_mode) == ("inductor", "max-autotune")
    assert (model.compile_mode, build("5b").compile_backend) == ("default", None)
    with pytest.raises(ValueError, match="dropout"):
        instantiate_from_config(network_config("5b", transformer_args={"compile": True, "hidden_dropout": 0.1}))
    with pytest.raises(ValueError, match="selective_mlp_out"):
        build("5b").set_checkpoint_mode("keep_everything")


# ---- compiled layers -----------------------------------------------------------------------
@pytest.fixture
def dynamo():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


@pytest.mark.parametrize(("variant", "lora", "modes"), [("2b", True, ("none", "full", "selective_mlp_out")), ("5b", True, ("selective",)), ("1.5_i2v", False, ("selective",))])
def test_compiled_layers_equal_eager_in_one_graph(dynamo, variant, lora, modes):
    model = build(variant, lora=lora)
    kwargs = inputs(variant)
    for mode in modes:
        model.set_checkpoint_mode(mode)
        model.set_compile(False)
        reference = step(model, kwargs)
        model.set_compile(True, backend="aot_eager")
        for _ in range(2):
            assert_same_step(step(model, kwargs), reference, atol=1e-6)
    # one graph per mode shared by all layers and steps; with LoRA a second one for layer 0,
    # whose input (frozen embeddings) needs no gradient
    assert dynamo["stats"]["unique_graphs"] == len(modes) * (2 if lora else 1)
    assert not dynamo["graph_break"]


def test_compile_mode_reaches_torch_compile(dynamo, monkeypatch):
    seen = []

    def recording_compile(fn, **kwargs):
        seen.append(kwargs)
        return fn

    checkpointing._group_runner.cache_clear()
    monkeypatch.setattr(torch, "compile", recording_compile)
    model = build("2b", lora=True)
    kwargs = inputs("2b")
    for mode in ("default", "max-autotune"):
        model.set_compile(True, "inductor", mode)
        step(model, kwargs)
    checkpointing._group_runner.cache_clear()  # drop the runners built with the recording stand-in
    assert {"backend": "inductor", "dynamic": None} in seen
    assert {"backend": "inductor", "mode": "max-autotune-no-cudagraphs", "dynamic": None} in seen
    assert all(s.get("mode") in (None, "max-autotune-no-cudagraphs") for s in seen)
    # other backends have no modes: refused, not dropped (torch would only log that it ignores it)
    with pytest.raises(ValueError, match="inductor mode"):
        model.set_compile(True, "aot_eager", "max-autotune")
    with pytest.raises(ValueError, match="choose one of"):
        model.set_compile(True, "inductor", "fastest")


def test_compiled_inference_and_new_shapes_do_not_recompile_per_step(dynamo):
    model = build("5b", lora=False).eval()
    model.set_compile(True, backend="aot_eager")
    with torch.no_grad():
        for frames in (3, 3, 2, 1, 2):
            kwargs = inputs("5b", frames=frames)
            model.set_compile(False)
            expected = model(**kwargs)
            model.set_compile(True, backend="aot_eager")
            torch.testing.assert_close(model(**kwargs), expected, rtol=1e-6, atol=1e-6)
    assert dynamo["stats"]["unique_graphs"] <= 2  # static first, then one dynamic-shape graph


def partitioned_backward_ops(model, kwargs) -> list[tuple]:
    """Run one compiled training step through AOT autograd with inductor's min-cut partitioner
    (no codegen); return the backward graph's ops with their argument shapes."""
    from functorch.compile import min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return gm

    backend = aot_autograd(fw_compiler=keep, bw_compiler=keep, partition_fn=min_cut_rematerialization_partition)
    model.set_compile(True, backend=backend)
    step(model, kwargs)
    backward = graphs[-1]
    return [(node.target, tuple(_shape(a) for a in node.args)) for node in backward.graph.nodes if node.op == "call_function"]


def _shape(arg) -> tuple | None:
    value = getattr(arg, "meta", {}).get("val")
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


@pytest.mark.parametrize(("mode", "recomputes_attention", "recomputes_mlp_out"), [("full", True, True), ("selective", False, True), ("selective_mlp_out", False, False)])
def test_compiled_checkpointing_keeps_what_its_policy_says(dynamo, mode, recomputes_attention, recomputes_mlp_out):
    # full fine-tuning: the MLP output is needed in backward (its gate is trained), so it is either
    # recomputed or kept (with frozen LoRA bases the partitioner drops its recomputation anyway)
    model = build("2b", lora=False, transformer_args={"checkpoint_activations": True})
    model.set_checkpoint_mode(mode)
    ops = partitioned_backward_ops(model, inputs("2b"))
    assert any(op in _ATTENTION_KERNELS for op, _ in ops) == recomputes_attention
    forward_linears = {shapes[2] for op, shapes in ops if op is aten.addmm.default}  # addmm(bias, x, weight.t())
    assert (HIDDEN, 4 * HIDDEN) in forward_linears  # the MLP input (GELU's input) is always recomputed
    assert ((4 * HIDDEN, HIDDEN) in forward_linears) == recomputes_mlp_out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="CPU inductor needs a C++ compiler")
@pytest.mark.parametrize("compile_mode", ["default", "max-autotune"])
def test_inductor_compiled_selective_step_equals_eager(dynamo, compile_mode):
    model = build("5b", lora=True)
    kwargs = inputs("5b")
    model.set_checkpoint_mode("selective")
    reference = step(model, kwargs)
    model.set_compile(True, "inductor", compile_mode)
    assert_same_step(step(model, kwargs), reference, atol=1e-5)

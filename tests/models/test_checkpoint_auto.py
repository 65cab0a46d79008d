"""`checkpoint_mode: auto`: the planner's greedy (budget respected, monotonic, attention kept
first) and a tiny DiT whose planned mix of modes gives the numbers of `full`."""

from __future__ import annotations

import pytest
import torch

from cogvideox_sat.models.checkpoint_plan import GIB, LayerShape, plan_checkpointing
from cogvideox_sat.models.transformer_args import TransformerArgs
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import HEADS, HIDDEN, LAYERS, TEXT_LENGTH, inputs, network_config, randomize_

SHAPES = {
    "2b": LayerShape(1920, 30, 1, 17776, 2),
    "5b_lora": LayerShape(3072, 48, 1, 17776, 2, lora=True),
    "sequence_parallel": LayerShape(3072, 48, 2, 17776, 2, shards=4),
}


def gib(shape: LayerShape, mode: str, layers: int = 1) -> float:
    return layers * shape.mode_costs()[mode][0] / GIB


# ---- the planner ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("skip", [0, 2])
def test_more_budget_never_keeps_less_and_the_plan_fits(name, skip):
    shape = SHAPES[name]
    top = gib(shape, "none", 30) * 1.1
    kept = 0.0
    for budget in torch.linspace(top / 400, top, 400).tolist():
        plan = plan_checkpointing(shape, 30, budget, skip_last=skip)
        assert len(plan.modes) == 30 and plan.modes[30 - skip :] == ("none",) * skip
        assert plan.kept_bytes >= kept
        assert plan.kept_bytes <= budget * GIB or not plan.fits
        kept = plan.kept_bytes
    assert plan.modes == ("none",) * 30


@pytest.mark.parametrize("name", SHAPES)
def test_budget_extremes(name):
    shape = SHAPES[name]
    assert plan_checkpointing(shape, 30, gib(shape, "none", 30)).modes == ("none",) * 30
    plan = plan_checkpointing(shape, 30, gib(shape, "full", 30) * 0.9)
    assert plan.modes == ("full",) * 30 and not plan.fits
    assert "below" in plan.summary(shape, 1.0)


@pytest.mark.parametrize("name", SHAPES)
def test_attention_outputs_are_kept_before_mlp_outputs(name):
    shape = SHAPES[name]
    costs = shape.mode_costs()
    per_byte = {m: (costs[m][1] - costs[p][1]) / (costs[m][0] - costs[p][0]) for p, m in (("full", "selective"), ("selective", "selective_mlp_out"))}
    assert per_byte["selective"] > per_byte["selective_mlp_out"]
    # with room for k layers' attention outputs, k layers keep them (lean layers first)
    for k in range(31):
        budget = gib(shape, "full", 30 - k) + gib(shape, "selective", k) + 1e-6
        assert plan_checkpointing(shape, 30, budget).modes == ("full",) * (30 - k) + ("selective",) * k


def test_lora_never_keeps_the_mlp_output_it_never_recomputes():
    shape = SHAPES["5b_lora"]
    for budget in torch.linspace(1, gib(shape, "none", 42), 100).tolist():
        assert not {"selective_mlp_out", "selective_matmul"} & set(plan_checkpointing(shape, 42, budget).modes)


def test_summary_names_the_plan():
    shape = SHAPES["2b"]
    plan = plan_checkpointing(shape, 30, 6.0)
    assert plan.summary(shape, 6.0).startswith("checkpoint_mode auto: budget 6 GiB at 1 x 17776 tokens -> 30 selective_mlp_out layers (5.78 GiB kept")


# ---- the tiny DiT --------------------------------------------------------------------------
def build(**transformer_args):
    return randomize_(instantiate_from_config(network_config("5b", transformer_args={"checkpoint_activations": True, **transformer_args})))


def step(model, kwargs):
    model.zero_grad(set_to_none=True)
    out = model(**kwargs)
    (out.float() ** 2).mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def tiny_shape(kwargs) -> LayerShape:
    batch, frames, _, height, width = kwargs["x"].shape
    return LayerShape(HIDDEN, HEADS, batch, TEXT_LENGTH + frames * height * width // 4, 4)


@pytest.mark.parametrize("compiled", [False, True])
def test_auto_plan_gives_the_numbers_of_full(compiled, capsys):
    kwargs = inputs("5b")
    shape = tiny_shape(kwargs)
    budget = gib(shape, "selective") + gib(shape, "none")  # one layer of each
    model = build(checkpoint_mode="auto", checkpoint_budget_gib=budget)
    reference = step(build(checkpoint_mode="full"), kwargs)
    if compiled:
        torch._dynamo.reset()
        model.set_compile(True, backend="aot_eager")
    for _ in range(2):
        out, grads = step(model, kwargs)
        torch.testing.assert_close(out, reference[0], rtol=0, atol=1e-6)
        assert grads.keys() == reference[1].keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference[1][name], rtol=1e-5, atol=1e-7, msg=name)
    assert list(model._checkpoint_plans.values()) == [("selective", "none")]
    (line,) = capsys.readouterr().out.splitlines()  # planned once for the shape
    assert line.startswith("checkpoint_mode auto:") and "1 none, 1 selective layers" in line
    if compiled:
        torch._dynamo.reset()


def test_auto_below_full_warns_and_checkpoints_fully():
    kwargs = inputs("5b")
    model = build(checkpoint_mode="auto", checkpoint_budget_gib=gib(tiny_shape(kwargs), "full"))
    with pytest.warns(UserWarning, match="below what full checkpointing keeps"):
        step(model, kwargs)
    assert list(model._checkpoint_plans.values()) == [("full",) * LAYERS]
    with torch.no_grad():
        model(**inputs("5b", frames=2))
    assert len(model._checkpoint_plans) == 1  # nothing planned without autograd


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"checkpoint_mode": "auto"}, "needs transformer_args.checkpoint_budget_gib"),
        ({"checkpoint_budget_gib": 6.0}, "set checkpoint_mode: auto or remove it"),
        ({"checkpoint_mode": "selective", "checkpoint_budget_gib": 6.0}, "only read by checkpoint_mode auto"),
        ({"checkpoint_mode": "auto", "checkpoint_budget_gib": 0}, "positive number"),
        ({"checkpoint_mode": "auto", "checkpoint_budget_gib": "6"}, "positive number"),
        ({"checkpoint_mode": "auto", "checkpoint_budget_gib": True}, "positive number"),
        ({"checkpoint_mode": "auto", "checkpoint_budget_gib": 6, "checkpoint_num_layers": 2}, "checkpoint_num_layers to 1"),
    ],
)
def test_budget_config_errors(args, message):
    with pytest.raises(ValueError, match=message):
        TransformerArgs.from_config(args)


def test_set_checkpoint_mode_auto_needs_a_budget():
    model = build()
    with pytest.raises(ValueError, match="budget_gib"):
        model.set_checkpoint_mode("auto")
    model.set_checkpoint_mode("auto", budget_gib=1.0)
    assert (model.checkpoint_mode, model.checkpoint_budget_gib) == ("auto", 1.0)
    assert TransformerArgs.from_config({"checkpoint_activations": True, "checkpoint_mode": "auto", "checkpoint_budget_gib": 6}).effective_checkpoint_mode == "auto"

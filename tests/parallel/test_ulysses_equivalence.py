"""Ulysses sequence parallelism: P gloo ranks (heads split) give one process's DiT outputs and
input/parameter gradients.

Every rank builds the same seeded tiny DiT, runs the same inputs with its layers on a slice of the
tokens, and backpropagates a fixed random projection of the output. Outputs must equal the
single-process output on every rank; gradients summed over the ranks and divided by P (what
DeepSpeed's data-parallel mean does) must equal the single-process gradients. A hook records the
token count each rank's attention received, so a run that silently fell back to the whole
sequence fails too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from _parallel_testkit import assert_close, run_ranks

from cogvideox_sat.parallel import SequenceShard, check_sequence_parallel_degree, split_sizes
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import inputs, network_config, randomize_

# (variant, heads, hidden, text tokens, batch, checkpoint mode, world)
CASES_2 = {
    "2b_sincos": ("2b", 4, 64, 8, 2, "none"),
    "5b_rope_checkpointed": ("5b", 4, 64, 8, 2, "full"),
    "1.5_i2v_rope": ("1.5_i2v", 2, 64, 8, 1, "selective"),
    "5b_auto": ("5b", 4, 64, 8, 2, ("auto", 3e-4)),  # (mode, budget GiB): a per-layer plan for the slices
}
# 3 ranks: uneven slices, and the text tokens straddle the first slice boundary
CASES_3 = {
    "2b_uneven": ("2b", 6, 96, 40, 1, "none"),
    "1.5_rope_uneven": ("1.5", 6, 96, 40, 2, "none"),
}


def _config(variant: str, heads: int, hidden: int, text: int) -> dict[str, Any]:
    cfg = network_config(variant, num_attention_heads=heads, hidden_size=hidden)
    cfg["params"]["modules"]["pos_embed_config"]["params"]["text_length"] = text
    return cfg


def _case(spec: tuple) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    variant, heads, hidden, text, batch, mode = spec
    torch.manual_seed(0)
    model = randomize_(instantiate_from_config(_config(variant, heads, hidden, text)), seed=5)
    model.set_checkpoint_mode(*mode) if isinstance(mode, tuple) else model.set_checkpoint_mode(mode)
    kwargs = inputs(variant, batch=batch, seed=2)
    gen = torch.Generator().manual_seed(9)
    kwargs["context"] = torch.randn(batch, text, kwargs["context"].shape[-1], generator=gen)
    kwargs["x"].requires_grad_(True)
    kwargs["context"].requires_grad_(True)
    with torch.no_grad():
        weight = torch.randn(model(**kwargs).shape, generator=gen)
    return model, kwargs, weight


def _forward_backward(model: torch.nn.Module, kwargs: dict[str, torch.Tensor], weight: torch.Tensor) -> dict[str, Any]:
    seen: list[int] = []
    hook = model.transformer.layers[0].attention.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    out = model(**kwargs)
    (out * weight).sum().backward()
    hook.remove()
    grads = {f"param.{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {"out": out.detach(), "x.grad": kwargs["x"].grad.clone(), "context.grad": kwargs["context"].grad.clone(), **grads, "tokens_seen": seen}


def _worker(rank: int, world: int, cases: dict[str, tuple]) -> dict[str, Any]:
    group = dist.new_group(list(range(world)))
    results = {}
    for name, spec in cases.items():
        model, kwargs, weight = _case(spec)
        model.set_sequence_parallel(group)
        results[name] = _forward_backward(model, kwargs, weight)
    # a degree that does not divide the heads is refused before any communication
    model, _, _ = _case(("2b", 3 if world == 2 else 4, 96, 8, 1, "none"))
    try:
        model.set_sequence_parallel(group)
        results["refused"] = None
    except ValueError as err:
        results["refused"] = str(err)
    return results


def _compare(cases: dict[str, tuple], per_rank: list[dict[str, Any]]) -> None:
    world = len(per_rank)
    for name, spec in cases.items():
        model, kwargs, weight = _case(spec)
        ref = _forward_backward(model, kwargs, weight)
        total = ref["tokens_seen"][0]
        assert [r[name]["tokens_seen"][0] for r in per_rank] == list(split_sizes(total, world)), name
        for rank, got in enumerate(per_rank):
            assert_close(got[name]["out"], ref["out"], f"{name} output on rank {rank}")
        keys = [k for k in ref if k.endswith("grad") or k.startswith("param.")]
        assert len(keys) == len(list(model.parameters())) + 2
        largest = max(ref[k].abs().max().item() for k in keys)
        for key in keys:
            mean = sum(r[name][key] for r in per_rank) / world
            assert_close(mean, ref[key], f"{name} {key}", rtol=2e-5, scale=1e-2 * largest)


@pytest.mark.parametrize("world, cases", [(2, CASES_2), (3, CASES_3)], ids=["2ranks", "3ranks"])
def test_ulysses_matches_one_process(world: int, cases: dict[str, tuple], tmp_path: Path) -> None:
    per_rank = run_ranks(_worker, world, tmp_path, cases)
    _compare(cases, per_rank)
    for r in per_rank:
        assert r["refused"] is not None and "does not divide num_attention_heads" in r["refused"]


def test_degree_must_divide_heads() -> None:
    check_sequence_parallel_degree(30, 2)
    check_sequence_parallel_degree(48, 4)
    with pytest.raises(ValueError, match=r"degree 4 does not divide num_attention_heads 30.*\[1, 2, 3, 5, 6, 10, 15, 30\]"):
        check_sequence_parallel_degree(30, 4)
    with pytest.raises(ValueError, match="degree 5 does not divide num_attention_heads 48"):
        check_sequence_parallel_degree(48, 5)


def test_slices_cover_the_sequence() -> None:
    assert split_sizes(17776, 4) == (4444,) * 4
    assert split_sizes(45106, 4) == (11277, 11277, 11276, 11276)
    with pytest.raises(ValueError):
        split_sizes(2, 3)
    shards = [SequenceShard(None, split_sizes(88, 3), r) for r in range(3)]
    assert [(s.start, s.size) for s in shards] == [(0, 30), (30, 29), (59, 29)]
    assert [s.count_in(0, 40) for s in shards] == [30, 10, 0]  # text tokens in each slice

"""The first-block step cache: exact at threshold 0, skips steps at a loose threshold (tiny DiT,
DPM-Solver++ SDE with CFG, as sampling runs it)."""

from __future__ import annotations

import pytest
import torch

from _diffusion_configs import denoiser as denoiser_cfg
from _diffusion_configs import discretization
from cogvideox_sat.diffusion.step_cache import StepCache
from cogvideox_sat.diffusion.wrappers import OpenAIWrapper
from cogvideox_sat.registry import instantiate_from_config
from tests.models.dit_cases import TEXT_HIDDEN, TEXT_LENGTH, network_config, randomize_

STEPS = 6


def sample(threshold: float | None, seed: int = 0):
    torch.manual_seed(0)
    net = OpenAIWrapper(randomize_(instantiate_from_config(network_config("5b")), seed=1).eval())
    den = instantiate_from_config(denoiser_cfg(3.0))
    params = {"num_steps": STEPS, "verbose": False, "discretization_config": discretization(3.0), "step_cache_threshold": threshold}
    params["guider_config"] = {"target": "sgm.modules.diffusionmodules.guiders.DynamicCFG", "params": {"scale": 6, "exp": 5, "num_steps": STEPS}}
    sampler = instantiate_from_config({"target": "sgm.modules.diffusionmodules.sampling.VPSDEDPMPP2MSampler", "params": params})
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, 4, 8, 12, generator=gen)
    text = torch.randn(1, TEXT_LENGTH, TEXT_HIDDEN, generator=gen)
    calls = []
    original_forward = net.diffusion_model.transformer.layers[-1].attention.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original_forward(*args, **kwargs)

    net.diffusion_model.transformer.layers[-1].attention.forward = counting
    torch.manual_seed(seed)
    with torch.no_grad():
        out = sampler(lambda x, a, c, **kw: den(net, x, a, c, **kw), x, {"crossattn": text}, uc={"crossattn": torch.zeros_like(text)})
    return out, sampler.last_step_cache, len(calls)


def test_threshold_zero_is_exact_and_a_loose_threshold_skips_steps():
    plain, cache, last_layer_runs = sample(None)
    assert cache is None and last_layer_runs == STEPS
    exact, cache, last_layer_runs = sample(0.0)
    assert torch.equal(exact, plain)
    assert (cache.steps, cache.skipped, last_layer_runs) == (STEPS, 0, STEPS)
    loose, cache, last_layer_runs = sample(10.0)
    assert cache.steps == STEPS and cache.skipped == STEPS - 1 and last_layer_runs == 1  # only the first step computes
    assert torch.isfinite(loose).all() and not torch.equal(loose, plain)


def test_step_cache_values_and_training_are_refused():
    with pytest.raises(ValueError, match="step_cache_threshold must be a number >= 0"):
        StepCache(-0.1)
    with pytest.raises(RuntimeError, match="without gradients"):
        StepCache(0.1).run(torch.zeros(1, requires_grad=True), lambda h: h, lambda h: h)


@torch.no_grad()
def test_cache_compares_with_the_last_computed_step():
    cache = StepCache(0.5)
    ones = torch.ones(2, 3)
    rest = lambda h: h + 10  # noqa: E731
    assert torch.equal(cache.run(ones, lambda h: h + 1, rest), ones + 11)  # first step: computed
    # residual 1.2 vs 1: change 0.2 < 0.5, skipped: first block + remembered rest residual (10)
    assert torch.equal(cache.run(ones, lambda h: h + 1.2, lambda h: h * 0), ones + 11.2)
    # 1.6 vs the last computed 1 (not 1.2): change 0.6, computed again
    assert torch.equal(cache.run(ones, lambda h: h + 1.6, rest), ones + 11.6)
    assert (cache.steps, cache.skipped) == (3, 1)
    # every step after the first keeps its change, so a run shows what a threshold would skip
    assert cache.changes == pytest.approx([0.2, 0.6])
    assert cache.summary() == "skipped 1/3 steps at 0.5, change per step min/median/max 0.2/0.4/0.6"

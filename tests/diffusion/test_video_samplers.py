"""Samplers and guiders: shapes, determinism under a seed, CFG plumbing, hand-checked steps."""

from __future__ import annotations

import pytest
import torch

from _diffusion_configs import denoiser as denoiser_cfg
from _diffusion_configs import discretization
from cogvideox_sat.diffusion.guiders import VanillaCFG
from cogvideox_sat.registry import instantiate_from_config

SAMPLERS = ["VPSDEDPMPP2MSampler", "VPODEDPMPP2MSampler", "VideoDDIMSampler"]
GUIDERS = {
    "vanilla": {"target": "sgm.modules.diffusionmodules.guiders.VanillaCFG", "params": {"scale": 4.0}},
    "dynamic": {
        "target": "sgm.modules.diffusionmodules.guiders.DynamicCFG",
        "params": {"scale": 6, "exp": 5, "num_steps": 3},
    },
}


def make_sampler(name: str, guider: str | None = "dynamic", num_steps: int = 3, **params):
    cfg = {
        "target": f"sgm.modules.diffusionmodules.sampling.{name}",
        "params": {"num_steps": num_steps, "verbose": False, "discretization_config": discretization(3.0), **params},
    }
    if guider is not None:
        cfg["params"]["guider_config"] = GUIDERS[guider]
    return instantiate_from_config(cfg)


class TinyVNet(torch.nn.Module):
    """A small v-predicting stand-in for the DiT with the wrapper's call signature."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.seen: list[dict] = []

    def forward(self, x, t, c, **kwargs):
        self.seen.append({"x": x.shape, "t": t.clone(), "c": {k: v.clone() for k, v in c.items()}, **kwargs})
        h = self.proj(x.movedim(2, -1)).movedim(-1, 2)
        return h + c["crossattn"].mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) + 0.001 * t.view(-1, 1, 1, 1, 1)


def denoise_fn(net):
    den = instantiate_from_config(denoiser_cfg(3.0))
    return lambda x, alpha, cond, **inputs: den(net, x, alpha, cond, **inputs)


def conds(b: int = 2):
    c = {"crossattn": torch.randn(b, 3, 8)}
    uc = {"crossattn": torch.zeros(b, 3, 8)}
    return c, uc


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("guider", ["vanilla", "dynamic"])
def test_shape_and_determinism_under_seed(name, guider):
    net = TinyVNet()
    sampler = make_sampler(name, guider)
    c, uc = conds()
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        x = torch.randn(2, 3, 4, 2, 2)
        outs.append(sampler(denoise_fn(net), x, c, uc=uc))
    assert outs[0].shape == (2, 3, 4, 2, 2) and outs[0].dtype == torch.float32
    assert torch.isfinite(outs[0]).all()
    assert torch.equal(outs[0], outs[1])
    # CFG: every network call saw the doubled batch, unconditional half first.
    assert len(net.seen) == 2 * 3
    for call in net.seen:
        assert call["x"][0] == 4
        assert torch.equal(call["c"]["crossattn"][:2], uc["crossattn"])
    # Timesteps 999 -> 0 as the official loop passes them (float, one per sample).
    assert [call["t"][0].item() for call in net.seen[:3]] == [999.0, 666.0, 333.0]


def test_sde_sampler_is_random_and_ode_is_not():
    net = TinyVNet()
    c, uc = conds()
    x = torch.randn(2, 3, 4, 2, 2)
    for name, random_ in [("VPSDEDPMPP2MSampler", True), ("VPODEDPMPP2MSampler", False)]:
        sampler = make_sampler(name)
        torch.manual_seed(1)
        a = sampler(denoise_fn(net), x.clone(), c, uc=uc)
        torch.manual_seed(2)
        b = sampler(denoise_fn(net), x.clone(), c, uc=uc)
        assert torch.equal(a, b) is not random_


def test_first_sde_step_by_hand():
    """From alpha = 0 the SDE step is x1 = alpha1 * x0_hat + sqrt(1 - alpha1^2) * noise."""
    sampler = make_sampler("VPSDEDPMPP2MSampler", guider=None)
    alpha, _ = sampler.sampling_schedule()
    target = torch.randn(1, 2, 4, 2, 2)
    x = torch.randn(1, 2, 4, 2, 2)
    torch.manual_seed(5)
    x1, denoised = sampler.sampler_step(
        None, None, alpha[:1], alpha[1:2], lambda *a, **k: target, x, {}, {},
        idx=3, timestep=torch.tensor(999), step_index=torch.tensor(-996),
    )
    torch.manual_seed(5)
    noise = torch.randn_like(x)
    a1 = alpha[1]
    torch.testing.assert_close(x1, a1 * target + (1 - a1**2) ** 0.5 * noise)
    assert denoised is target


def test_ddim_step_by_hand():
    sampler = make_sampler("VideoDDIMSampler", guider=None)
    alpha, _ = sampler.sampling_schedule()
    target, x = torch.randn(1, 2, 4, 2, 2), torch.randn(1, 2, 4, 2, 2)
    a, a_next = alpha[1:2], alpha[2:3]
    out = sampler.sampler_step(a, a_next, lambda *args, **k: target, x, {}, {},
                               timestep=torch.tensor(666), step_index=torch.tensor(-663))
    eps = (x - a * target) / (1 - a**2) ** 0.5
    torch.testing.assert_close(out, a_next * target + (1 - a_next**2) ** 0.5 * eps)


@pytest.mark.parametrize("name", ["VPSDEDPMPP2MSampler", "VPODEDPMPP2MSampler"])
def test_ofs_and_concat_reach_the_network(name):
    net = TinyVNet()
    sampler = make_sampler(name)
    c, uc = conds(1)
    image = torch.randn(1, 3, 4, 2, 2)
    c["concat"], uc["concat"] = image, image
    ofs = torch.tensor([2.0])
    sampler(denoise_fn(net), torch.randn(1, 3, 4, 2, 2), c, uc=uc, ofs=ofs)
    assert all(torch.equal(call["ofs"], ofs) for call in net.seen)
    assert all(torch.equal(call["c"]["concat"], torch.cat([image, image])) for call in net.seen)


def test_scale_one_runs_a_single_conditional_pass():
    net = TinyVNet()
    sampler = make_sampler("VPSDEDPMPP2MSampler")
    c, uc = conds()
    sampler(denoise_fn(net), torch.randn(2, 3, 4, 2, 2), c, uc=uc, scale=1)
    assert all(call["x"][0] == 2 for call in net.seen)


def test_fixed_frames_keep_the_prefix():
    net = TinyVNet()
    sampler = make_sampler("VPSDEDPMPP2MSampler", fixed_frames=1)
    c, uc = conds(1)
    x = torch.randn(1, 3, 4, 2, 2)
    out = sampler(denoise_fn(net), x.clone(), c, uc=uc)
    assert torch.equal(out[:, :1], x[:, :1]) and not torch.equal(out[:, 1:], x[:, 1:])


def test_vanilla_cfg_combination():
    guider = VanillaCFG(scale=3.0)
    uncond, cond = torch.randn(2, 5), torch.randn(2, 5)
    torch.testing.assert_close(guider(torch.cat([uncond, cond]), None), uncond + 3.0 * (cond - uncond))
    x, s, c = guider.prepare_inputs(torch.ones(2, 5), torch.ones(2), {"crossattn": cond, "k": 1}, {"crossattn": uncond, "k": 1})
    assert x.shape == (4, 5) and s.shape == (4,) and torch.equal(c["crossattn"], torch.cat([uncond, cond]))
    with pytest.raises(ValueError, match="differs"):
        guider.prepare_inputs(torch.ones(2, 5), torch.ones(2), {"k": 1}, {"k": 2})

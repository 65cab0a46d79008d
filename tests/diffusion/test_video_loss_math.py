"""VideoDiffusionLoss: noising, v-target and weighting against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from _diffusion_configs import denoiser as denoiser_cfg
from _diffusion_configs import loss as loss_cfg
from cogvideox_sat.diffusion.loss import NoiseDraw, VideoDiffusionLoss
from cogvideox_sat.registry import instantiate_from_config


def hand_alpha(idx: int, shift: float) -> float:
    """sqrt(alpha_cumprod) at DDPM timestep idx, written out independently in float64."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    acp = np.cumprod(1 - betas)
    acp = acp / (shift + (1 - shift) * acp)
    a = np.sqrt(acp)
    return float((a[idx] - a[-1]) * a[0] / (a[0] - a[-1]))


class RecordingNet(nn.Module):
    """Returns a fixed output and remembers what the denoiser fed it."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output
        self.calls: list[tuple] = []

    def forward(self, x, t, c, **kwargs):
        self.calls.append((x.clone(), t.clone(), dict(c), dict(kwargs)))
        return self.output


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_noising_target_and_weight_match_hand_computation(shift):
    b, shape = 2, (3, 4, 2, 2)  # [b, t, c, h, w]
    x0 = torch.randn(b, *shape, dtype=torch.float64).float()
    noise = torch.randn(b, *shape)
    idx = torch.tensor([37, 912])
    loss_fn: VideoDiffusionLoss = instantiate_from_config(loss_cfg(shift))
    denoiser = instantiate_from_config(denoiser_cfg(shift))

    alpha_hand = torch.tensor([hand_alpha(i, shift) for i in idx.tolist()])
    draw = NoiseDraw(idx=idx, alphas_cumprod_sqrt=loss_fn.sigma_sampler.idx_to_sigma(idx), noise=noise)
    torch.testing.assert_close(draw.alphas_cumprod_sqrt, alpha_hand.float(), rtol=2e-6, atol=1e-7)

    a = alpha_hand.view(b, 1, 1, 1, 1).double()
    s = (1 - a**2).sqrt()
    xt_hand = a * x0.double() + s * noise.double()
    v_hand = a * noise.double() - s * x0.double()  # the v-prediction target

    # 1. A network that predicts v exactly gives zero loss.
    net = RecordingNet(v_hand.float())
    cond = {"crossattn": torch.randn(b, 5, 8)}
    concat = torch.randn(b, *shape)
    batch = {"concat_images": concat}
    loss = loss_fn.compute(net, denoiser, cond, x0, batch, draw)
    assert loss.shape == (b,)
    assert loss.max().item() < 1e-8
    # The network saw x_t (c_in = 1), the timestep index, and both conditions.
    x_seen, t_seen, c_seen, kw_seen = net.calls[0]
    torch.testing.assert_close(x_seen.double(), xt_hand, rtol=1e-5, atol=1e-6)
    assert torch.equal(t_seen, idx) and torch.equal(kw_seen["idx"], idx)
    assert c_seen["crossattn"] is cond["crossattn"] and c_seen["concat"] is concat

    # 2. Any other prediction: loss = mean(w * (x0_hat - x0)^2), x0_hat = a x_t - s v_hat.
    v_hat = torch.randn(b, *shape, dtype=torch.float64)
    net = RecordingNet(v_hat.float())
    loss = loss_fn.compute(net, denoiser, cond, x0, batch, draw)
    x0_hat = a * xt_hand - s * v_hat
    w = 1 / (1 - a**2)
    want = (w * (x0_hat - x0.double()) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
    # ... which equals the plain v-space MSE.
    torch.testing.assert_close(want, ((v_hat - v_hand) ** 2).flatten(1).mean(1), rtol=1e-9, atol=1e-9)


def test_official_call_is_draw_then_compute_under_a_seed():
    loss_fn = instantiate_from_config(loss_cfg(3.0))
    denoiser = instantiate_from_config(denoiser_cfg(3.0))
    x0 = torch.randn(2, 3, 4, 2, 2)
    net = RecordingNet(torch.randn(2, 3, 4, 2, 2))
    cond = {"crossattn": torch.randn(2, 5, 8)}
    torch.manual_seed(7)
    official = loss_fn(net, denoiser, lambda batch: cond, x0, {})
    torch.manual_seed(7)
    draw = loss_fn.draw(x0)
    split = loss_fn.compute(net, denoiser, cond, x0, {}, draw)
    assert torch.equal(official, split)
    assert draw.idx.dtype == torch.int64 and draw.noise.shape == x0.shape


def test_offset_noise_adds_one_constant_per_sample():
    loss_fn = instantiate_from_config(loss_cfg(1.0, offset_noise_level=0.5))
    x0 = torch.zeros(3, 2, 4, 2, 2)
    torch.manual_seed(3)
    draw = loss_fn.draw(x0)
    torch.manual_seed(3)
    torch.randint(0, 1000, (3,))
    plain = torch.randn_like(x0)
    offset = torch.randn(3) * 0.5
    torch.testing.assert_close(draw.noise, plain + offset.view(3, 1, 1, 1, 1))


def test_rejects_unsupported_loss_type():
    with pytest.raises(ValueError, match="l2"):
        instantiate_from_config(loss_cfg(1.0, type="lpips"))

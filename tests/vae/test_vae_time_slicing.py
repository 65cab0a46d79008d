"""Time-sliced evaluation (for huge activations) gives the one-call numbers.

The slice budget is lowered so that the tiny fixture model takes the sliced paths of every
op (causal conv, 1x1 conv, resampling, group norm statistics, in-place modulation).
"""

from __future__ import annotations

import pytest
import torch
from _vae_testkit import FIXTURE, rel_err, tiny_vae
from omegaconf import OmegaConf
from safetensors.torch import load_file

from cogvideox_sat.registry import instantiate_from_config
from cogvideox_sat.vae import slicing
from cogvideox_sat.vae.chunking import decode_chunked

TOL = 1e-5


@pytest.fixture(params=[700, 3000], ids=["one-frame-slices", "few-frame-slices"])
def small_slices(request, monkeypatch):
    monkeypatch.setattr(slicing, "MAX_SLICE_ELEMENTS", request.param)
    return request.param


def test_sliced_inference_matches_the_official_outputs(small_slices):
    if not FIXTURE.is_dir():
        pytest.skip("official fixtures not found")
    vae = instantiate_from_config(OmegaConf.load(FIXTURE / "config.yaml")).eval()
    vae.load_state_dict(load_file(FIXTURE / "state_dict.safetensors"))
    inputs, outputs = load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")
    with torch.no_grad():
        assert rel_err(vae.encode(inputs["x"], unregularized=True)[0], outputs["encode_unregularized_moments"]) <= TOL
        assert rel_err(vae.decode(outputs["encode_mode"]), outputs["decode_plain"]) <= TOL
        assert rel_err(vae.decoder(outputs["encode_mode"], use_cp=True), outputs["decoder_direct_use_cp_true"]) <= TOL


def test_sliced_streaming_matches_unsliced(monkeypatch):
    vae = tiny_vae(seed=9)
    z = torch.randn(1, 4, 6, 2, 3, generator=torch.Generator().manual_seed(1))
    reference = decode_chunked(vae, z, [4, 2])
    monkeypatch.setattr(slicing, "MAX_SLICE_ELEMENTS", 1000)
    assert rel_err(decode_chunked(vae, z, [4, 2]), reference) <= TOL


def test_sliced_autograd_matches_unsliced(monkeypatch):
    vae = tiny_vae(seed=9)
    x = (torch.rand(1, 3, 9, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1).requires_grad_(True)

    def grads() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x.grad = None
        vae.zero_grad()
        moments = vae.encode_moments(x)
        frames = vae.decoder(moments[:, :4], use_cp=True)
        (frames.square().mean() + moments.sum()).backward()
        return frames.detach(), x.grad.clone(), vae.decoder.conv_in.conv.weight.grad.clone()

    reference = grads()
    monkeypatch.setattr(slicing, "MAX_SLICE_ELEMENTS", 2000)
    for got, want in zip(grads(), reference):
        assert rel_err(got, want) <= TOL

"""CUDA checks of the VAE (skipped without a GPU): fixture parity in fp32, bf16 closeness,
sliced evaluation of large activations on the device."""

from __future__ import annotations

import pytest
import torch
from _vae_testkit import FIXTURE, rel_err, tiny_vae
from omegaconf import OmegaConf
from safetensors.torch import load_file

from cogvideox_sat.registry import instantiate_from_config
from cogvideox_sat.vae import slicing
from cogvideox_sat.vae.chunking import decode_chunked

pytestmark = pytest.mark.gpu


@pytest.fixture
def exact_cuda_math():
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def _fixture_vae():
    if not FIXTURE.is_dir():
        pytest.skip("official fixtures not found")
    vae = instantiate_from_config(OmegaConf.load(FIXTURE / "config.yaml")).eval()
    vae.load_state_dict(load_file(FIXTURE / "state_dict.safetensors"))
    return vae, load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")


def test_cuda_fp32_matches_the_official_outputs(exact_cuda_math):
    vae, inputs, outputs = _fixture_vae()
    vae = vae.cuda()
    with torch.no_grad():
        moments = vae.encode(inputs["x"].cuda(), unregularized=True)[0].cpu()
        frames = vae.decoder(outputs["encode_mode"].cuda(), use_cp=True).cpu()
    # cuDNN picks other algorithms than the CPU: a few ulps more than the CPU tests allow.
    assert rel_err(moments, outputs["encode_unregularized_moments"]) <= 1e-4
    assert rel_err(frames, outputs["decoder_direct_use_cp_true"]) <= 1e-4


def test_cuda_bf16_is_close_to_fp32():
    vae, inputs, outputs = _fixture_vae()
    vae = vae.cuda().to(torch.bfloat16)
    with torch.no_grad():
        frames = vae.decoder(outputs["encode_mode"].cuda().bfloat16(), use_cp=True).float().cpu()
    reference = outputs["decoder_direct_use_cp_true"]
    assert ((frames - reference).norm() / reference.norm()).item() < 3e-2


def test_cuda_sliced_paths_match(monkeypatch, exact_cuda_math):
    vae = tiny_vae(seed=4).cuda()
    z = torch.randn(1, 4, 7, 6, 8, generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        reference = vae.decoder(z, use_cp=True)
        streamed = decode_chunked(vae, z, [3, 2, 2])
        monkeypatch.setattr(slicing, "MAX_SLICE_ELEMENTS", 20_000)
        sliced = vae.decoder(z, use_cp=True)
        sliced_streamed = decode_chunked(vae, z, [3, 2, 2])
    assert rel_err(sliced, reference) <= 1e-5
    assert rel_err(sliced_streamed, streamed) <= 1e-5

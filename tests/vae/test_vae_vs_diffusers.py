"""A second, independent oracle: diffusers' AutoencoderKLCogVideoX with our weights renamed.

diffusers encodes 8 frames and decodes 2 latent frames at a time, carrying causal-conv state
between batches (GroupNorm per batch). Our streamed encode/decode with the same cuts must
give the same numbers, which also shows that the benchmark compares the same computation.
"""

from __future__ import annotations

import re

import pytest
import torch
from _vae_testkit import rel_err, tiny_vae

from cogvideox_sat.vae.chunking import decode_chunked, encode_chunked

diffusers = pytest.importorskip("diffusers")

TOL = 1e-5
LEVELS = 4


def to_diffusers_key(key: str) -> str:
    """Our (official SAT) VAE key -> diffusers AutoencoderKLCogVideoX key."""
    key = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", key)
    key = re.sub(r"\.up\.(\d+)\.block\.", lambda m: f".up_blocks.{LEVELS - 1 - int(m[1])}.resnets.", key)
    key = re.sub(r"\.up\.(\d+)\.upsample\.", lambda m: f".up_blocks.{LEVELS - 1 - int(m[1])}.upsamplers.0.", key)
    key = key.replace(".mid.block_1.", ".mid_block.resnets.0.").replace(".mid.block_2.", ".mid_block.resnets.1.")
    return key.replace(".nin_shortcut.", ".conv_shortcut.")


@pytest.fixture(scope="module")
def pair():
    ours = tiny_vae(seed=12)
    theirs = diffusers.AutoencoderKLCogVideoX(
        block_out_channels=(32, 64, 32, 32), layers_per_block=1, latent_channels=4
    ).eval()
    theirs.load_state_dict({to_diffusers_key(k): v for k, v in ours.state_dict().items()}, strict=True)
    return ours, theirs


def test_streamed_encode_matches_diffusers(pair):
    ours, theirs = pair
    x = torch.rand(1, 3, 17, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want = theirs.encode(x).latent_dist.parameters  # batches of frames 0-8 and 9-16
    assert rel_err(encode_chunked(ours, x, frames_per_chunk=8), want) <= TOL


def test_streamed_decode_matches_diffusers(pair):
    ours, theirs = pair
    z = torch.randn(1, 4, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = theirs.decode(z).sample  # batches of latent frames 0-2 and 3-4
    assert want.shape[2] == 17
    assert rel_err(decode_chunked(ours, z, [3, 2]), want) <= TOL
